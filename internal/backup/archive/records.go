package archive

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// Contents is the table of contents, the first record of every backup: it
// lets a restore check what it got against what was promised and report
// progress against a known total.
type Contents struct {
	Meta       int              // number of metadata entries
	Partitions []PartitionRange // sorted by name, names unique
}

// PartitionRange is a partition and the offsets the backup holds of it:
// [Start, End). The first batch may begin before Start (a batch can
// straddle the log-start offset) and the last ends at End-1.
type PartitionRange struct {
	Name  string
	Start int64
	End   int64
}

// Offsets is the number of offsets in the range.
func (p PartitionRange) Offsets() int64 { return p.End - p.Start }

// TotalOffsets is the number of offsets of every partition.
func (c Contents) TotalOffsets() int64 {
	var n int64
	for _, p := range c.Partitions {
		n += p.Offsets()
	}
	return n
}

// RecordKind says what a Record holds.
type RecordKind byte

// The record kinds, in the order a backup holds them: the contents, then
// every metadata entry, then each partition followed by its batches, then
// the end.
const (
	RecordContents  RecordKind = 'C'
	RecordMeta      RecordKind = 'K'
	RecordPartition RecordKind = 'P'
	RecordBatch     RecordKind = 'B'
	recordEnd       RecordKind = 'E'
)

// Record is one item of a backup's content.
type Record struct {
	Kind      RecordKind
	Key       string           // RecordMeta
	Value     []byte           // RecordMeta
	Partition PartitionRange   // RecordPartition
	Batch     seglog.BatchMeta // RecordBatch; Size is len(Data)
	Data      []byte           // RecordBatch: valid until the next call to Next

	contents Contents // RecordContents: the Reader keeps it
}

const (
	maxPartitions = 1 << 20
	maxMeta       = 1 << 24
	maxNameLen    = 255
	maxKeyLen     = 1 << 20
	maxValueLen   = 1 << 29
	maxBatchLen   = 1 << 30
)

// sequence checks that records come in the order and cover the ranges the
// contents promise. The writer uses it to refuse a caller's mistake, the
// reader to refuse a malformed backup, so both agree on what is valid.
type sequence struct {
	contents Contents
	started  bool
	ended    bool
	metas    int
	part     int   // index of the current partition; -1 before the first
	next     int64 // offset the next batch must start at; -1 before the first batch
}

func (s *sequence) begin(c Contents) error {
	if s.started {
		return errors.New("the contents come first and once")
	}
	if c.Meta < 0 || c.Meta > maxMeta || len(c.Partitions) > maxPartitions {
		return errors.New("the contents are too large")
	}
	for i, p := range c.Partitions {
		if p.Name == "" || len(p.Name) > maxNameLen {
			return errors.New("a partition name is 1 to 255 bytes")
		}
		if i > 0 && p.Name <= c.Partitions[i-1].Name {
			return errors.New("partitions are not sorted by unique name")
		}
		if p.Start < 0 || p.End < p.Start {
			return errors.New("a partition range is not 0 <= start <= end")
		}
	}
	s.contents, s.started, s.part = c, true, -1
	return nil
}

func (s *sequence) meta() error {
	switch {
	case !s.started || s.ended:
		return errors.New("a metadata entry outside the backup")
	case s.part >= 0:
		return errors.New("a metadata entry after the partitions")
	case s.metas == s.contents.Meta:
		return errors.New("more metadata entries than the contents list")
	}
	s.metas++
	return nil
}

// closePart checks that the current partition got all its batches.
func (s *sequence) closePart() error {
	if s.part < 0 {
		if s.metas != s.contents.Meta {
			return fmt.Errorf("%d metadata entries, the contents list %d", s.metas, s.contents.Meta)
		}
		return nil
	}
	if p := s.contents.Partitions[s.part]; p.Start < p.End && s.next != p.End {
		return errors.New("a partition ends before its end offset")
	}
	return nil
}

func (s *sequence) partition(p PartitionRange) error {
	if !s.started || s.ended {
		return errors.New("a partition outside the backup")
	}
	if err := s.closePart(); err != nil {
		return err
	}
	if s.part+1 >= len(s.contents.Partitions) || s.contents.Partitions[s.part+1] != p {
		return errors.New("a partition the contents do not list next")
	}
	s.part++
	s.next = -1
	return nil
}

func (s *sequence) batch(m seglog.BatchMeta) error {
	if !s.started || s.ended || s.part < 0 {
		return errors.New("a batch outside a partition")
	}
	p := s.contents.Partitions[s.part]
	if m.Records <= 0 || m.BaseOffset < 0 || m.BaseOffset > math.MaxInt64-int64(m.Records) {
		return errors.New("a batch covers no offsets")
	}
	// Offsets rise from batch to batch; a compacted log has gaps between
	// them, and may have one at its start.
	if s.next < 0 {
		if m.LastOffset() < p.Start {
			return errors.New("the first batch ends before the start offset")
		}
	} else if m.BaseOffset < s.next {
		return errors.New("batches overlap or go back")
	}
	if m.LastOffset() >= p.End {
		return errors.New("a batch goes past the partition's end offset")
	}
	s.next = m.LastOffset() + 1
	return nil
}

func (s *sequence) end() error {
	if !s.started || s.ended {
		return errors.New("the end outside the backup")
	}
	if err := s.closePart(); err != nil {
		return err
	}
	if s.part != len(s.contents.Partitions)-1 {
		return errors.New("partitions the contents list are missing")
	}
	s.ended = true
	return nil
}

// Encoding of records: a kind byte, then fields as varints and
// length-prefixed bytes.

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendRange(b []byte, p PartitionRange) []byte {
	b = appendString(b, p.Name)
	b = binary.AppendVarint(b, p.Start)
	return binary.AppendVarint(b, p.End)
}

func appendContents(b []byte, c Contents) []byte {
	b = append(b, byte(RecordContents))
	b = binary.AppendUvarint(b, uint64(c.Meta))
	b = binary.AppendUvarint(b, uint64(len(c.Partitions)))
	for _, p := range c.Partitions {
		b = appendRange(b, p)
	}
	return b
}

// appendBatchHead encodes a batch record up to its data.
func appendBatchHead(b []byte, m seglog.BatchMeta, n int) []byte {
	b = append(b, byte(RecordBatch))
	b = binary.AppendVarint(b, m.BaseOffset)
	b = binary.AppendVarint(b, int64(m.Records))
	b = binary.AppendVarint(b, m.FirstTimestamp)
	b = binary.AppendVarint(b, m.MaxTimestamp)
	b = binary.AppendVarint(b, m.ProducerID)
	b = binary.AppendVarint(b, int64(m.ProducerEpoch))
	b = binary.AppendVarint(b, int64(m.BaseSequence))
	return binary.AppendUvarint(b, uint64(n))
}

// recordDecoder reads records from the decompressed stream. Every byte it
// sees was authenticated first, so a malformed record means a writer bug;
// it is refused all the same, and lengths are bounded so that nothing is
// allocated beyond what the stream really holds.
type recordDecoder struct {
	r    *bufio.Reader
	data []byte // reused for batch data
}

// errBadRecord marks a record that does not parse; io errors pass through.
var errBadRecord = errors.New("a record does not parse")

func (d *recordDecoder) uvarint() (uint64, error) {
	v, err := binary.ReadUvarint(d.r)
	return v, eofIsBad(err)
}

func (d *recordDecoder) varint() (int64, error) {
	v, err := binary.ReadVarint(d.r)
	return v, eofIsBad(err)
}

// eofIsBad: the stream may end only between records.
func eofIsBad(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	if err != nil && err.Error() == "binary: varint overflows a 64-bit integer" {
		return errBadRecord
	}
	return err
}

func (d *recordDecoder) int32() (int32, error) {
	v, err := d.varint()
	if err == nil && (v < math.MinInt32 || v > math.MaxInt32) {
		err = errBadRecord
	}
	return int32(v), err
}

// readN reads n bytes into buf (grown in steps, so a huge length in a
// short stream fails before allocating it).
func (d *recordDecoder) readN(buf []byte, n uint64, limit uint64) ([]byte, error) {
	if n > limit {
		return nil, errBadRecord
	}
	buf = buf[:0]
	for uint64(len(buf)) < n {
		step := min(n-uint64(len(buf)), 4<<20)
		buf = grow(buf, int(step))
		if _, err := io.ReadFull(d.r, buf[len(buf)-int(step):]); err != nil {
			return nil, eofIsBad(err)
		}
	}
	return buf, nil
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) < n {
		nb := make([]byte, len(b), len(b)+n+len(b)/4)
		copy(nb, b)
		b = nb
	}
	return b[:len(b)+n]
}

func (d *recordDecoder) string(limit uint64) (string, error) {
	n, err := d.uvarint()
	if err != nil {
		return "", err
	}
	b, err := d.readN(nil, n, limit)
	return string(b), err
}

func (d *recordDecoder) partitionRange() (p PartitionRange, err error) {
	if p.Name, err = d.string(maxNameLen); err != nil {
		return p, err
	}
	if p.Start, err = d.varint(); err != nil {
		return p, err
	}
	p.End, err = d.varint()
	return p, err
}

// next reads one record. io.EOF means the stream ended cleanly between
// records.
func (d *recordDecoder) next() (Record, error) {
	kind, err := d.r.ReadByte()
	if err != nil {
		return Record{}, err
	}
	rec := Record{Kind: RecordKind(kind)}
	switch rec.Kind {
	case RecordContents:
		var c Contents
		nm, err := d.uvarint()
		if err != nil {
			return rec, err
		}
		np, err := d.uvarint()
		if err != nil {
			return rec, err
		}
		if nm > maxMeta || np > maxPartitions {
			return rec, errBadRecord
		}
		c.Meta = int(nm)
		for range np {
			p, err := d.partitionRange()
			if err != nil {
				return rec, err
			}
			c.Partitions = append(c.Partitions, p)
		}
		rec.contents = c
		return rec, nil
	case RecordMeta:
		if rec.Key, err = d.string(maxKeyLen); err != nil {
			return rec, err
		}
		n, err := d.uvarint()
		if err != nil {
			return rec, err
		}
		rec.Value, err = d.readN(make([]byte, 0, min(n, 1<<16)), n, maxValueLen)
		return rec, err
	case RecordPartition:
		rec.Partition, err = d.partitionRange()
		return rec, err
	case RecordBatch:
		m := &rec.Batch
		var ep, rc int64
		fields := []*int64{&m.BaseOffset, &rc, &m.FirstTimestamp, &m.MaxTimestamp, &m.ProducerID, &ep}
		for _, f := range fields {
			if *f, err = d.varint(); err != nil {
				return rec, err
			}
		}
		if rc < 1 || rc > math.MaxInt32 || ep < math.MinInt16 || ep > math.MaxInt16 {
			return rec, errBadRecord
		}
		m.Records, m.ProducerEpoch = int32(rc), int16(ep)
		if m.BaseSequence, err = d.int32(); err != nil {
			return rec, err
		}
		n, err := d.uvarint()
		if err != nil {
			return rec, err
		}
		if d.data, err = d.readN(d.data, n, maxBatchLen); err != nil {
			return rec, err
		}
		rec.Data = d.data
		m.Size = int32(len(rec.Data))
		return rec, nil
	case recordEnd:
		return rec, nil
	}
	return rec, errBadRecord
}
