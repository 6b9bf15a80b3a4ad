package seglog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
)

// A segment is one file of a partition's log, named by the offset of its
// first batch, with an index file written when it stops being active.
// Offsets inside a segment rise from batch to batch; compaction leaves gaps
// between them but keeps a segment's last batch, so segments still meet.
//
// The active segment keeps an entry per batch in memory. A sealed segment
// keeps only its summary (end offset, newest timestamp, size, keys); its
// entries are read from the index file when a read needs them and a few
// are cached per partition, so memory does not grow with the log.
type segment struct {
	base     int64
	f        *os.File
	size     int64                   // bytes of good blocks
	next     int64                   // the offset after the segment's last batch
	entries  []entry                 // active segment only, in offset order
	cached   atomic.Pointer[[]entry] // sealed segment: entries loaded from the index; nil when evicted
	keys     map[string]int          // batches per sealing key ID
	indexKey string                  // key ID that sealed the index file; "" when there is none
	maxTs    int64
}

// entry is a batch's place in a segment.
type entry struct {
	meta BatchMeta
	pos  int64
	len  int32 // block length on disk
}

const (
	segmentExt = ".log"
	indexExt   = ".idx"
	rewriteExt = ".rewrite"
	metaLen    = 46
)

func segmentName(base int64) string { return fmt.Sprintf("%020d%s", base, segmentExt) }
func indexName(base int64) string   { return fmt.Sprintf("%020d%s", base, indexExt) }

// segmentBases lists the segment files in dir, oldest first.
func segmentBases(dir string) ([]int64, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var bases []int64
	for _, de := range des {
		name := de.Name()
		if strings.HasSuffix(name, rewriteExt) {
			// A re-encryption that died before its rename: the original is intact.
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return nil, err
			}
			continue
		}
		if !strings.HasSuffix(name, segmentExt) {
			continue
		}
		b, err := strconv.ParseInt(strings.TrimSuffix(name, segmentExt), 10, 64)
		if err != nil || b < 0 {
			return nil, fmt.Errorf("unexpected file %q", name)
		}
		bases = append(bases, b)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	return bases, nil
}

func (s *segment) end() int64 { return s.next }

func (s *segment) add(e entry, keyID string) {
	s.entries = append(s.entries, e)
	s.keys[keyID]++
	s.maxTs = max(s.maxTs, e.meta.MaxTimestamp)
	s.next = e.meta.LastOffset() + 1
}

// onlyKey reports whether every block of the segment (data and index) is
// sealed by keyID.
func (s *segment) onlyKey(keyID string) bool {
	for k := range s.keys {
		if k != keyID {
			return false
		}
	}
	return s.indexKey == "" || s.indexKey == keyID
}

func encodeMeta(b []byte, m BatchMeta) []byte {
	b = binary.LittleEndian.AppendUint64(b, uint64(m.BaseOffset))
	b = binary.LittleEndian.AppendUint32(b, uint32(m.Records))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.FirstTimestamp))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.MaxTimestamp))
	b = binary.LittleEndian.AppendUint64(b, uint64(m.ProducerID))
	b = binary.LittleEndian.AppendUint16(b, uint16(m.ProducerEpoch))
	b = binary.LittleEndian.AppendUint32(b, uint32(m.BaseSequence))
	return binary.LittleEndian.AppendUint32(b, uint32(m.Size))
}

func decodeMeta(b []byte) BatchMeta {
	return BatchMeta{
		BaseOffset:     int64(binary.LittleEndian.Uint64(b[0:])),
		Records:        int32(binary.LittleEndian.Uint32(b[8:])),
		FirstTimestamp: int64(binary.LittleEndian.Uint64(b[12:])),
		MaxTimestamp:   int64(binary.LittleEndian.Uint64(b[20:])),
		ProducerID:     int64(binary.LittleEndian.Uint64(b[28:])),
		ProducerEpoch:  int16(binary.LittleEndian.Uint16(b[36:])),
		BaseSequence:   int32(binary.LittleEndian.Uint32(b[38:])),
		Size:           int32(binary.LittleEndian.Uint32(b[42:])),
	}
}

var errBatch = errors.New("batch block is inconsistent")

// scanSegment rebuilds a segment's entries from its file contents. It
// returns where the good blocks end; the caller cuts a torn tail only in
// the active segment.
func scanSegment(seg *segment, b []byte, kr *keyring, stream string) (int64, error) {
	next := seg.base
	return scanBlocks(b, kr, blockID{kind: kindData, stream: stream, base: seg.base}, func(pos int64, blockLen int, keyID string, plain []byte) error {
		if len(plain) < metaLen {
			return errBatch
		}
		m := decodeMeta(plain)
		if m.BaseOffset < next || m.Records <= 0 || int(m.Size) != len(plain)-metaLen {
			return errBatch
		}
		next = m.LastOffset() + 1
		seg.add(entry{meta: m, pos: pos, len: int32(blockLen)}, keyID)
		return nil
	})
}

// The index file is one block: the segment's size, the key IDs of its
// blocks and every entry. It is written when a segment stops being active
// and trusted on open only when the size it records matches the file.
const entryLen = metaLen + 8 + 4

func encodeIndex(seg *segment) []byte {
	b := make([]byte, 0, 16+len(seg.entries)*entryLen+64*len(seg.keys))
	b = binary.LittleEndian.AppendUint64(b, uint64(seg.size))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(seg.keys)))
	keys := make([]string, 0, len(seg.keys))
	for k := range seg.keys {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b = append(b, byte(len(k)))
		b = append(b, k...)
		b = binary.LittleEndian.AppendUint32(b, uint32(seg.keys[k]))
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(seg.entries)))
	for _, e := range seg.entries {
		b = encodeMeta(b, e.meta)
		b = binary.LittleEndian.AppendUint64(b, uint64(e.pos))
		b = binary.LittleEndian.AppendUint32(b, uint32(e.len))
	}
	return b
}

var errIndex = errors.New("index does not match its segment")

// indexInfo is what an index holds.
type indexInfo struct {
	size    int64
	next    int64
	maxTs   int64
	keys    map[string]int
	entries []entry
}

// decodeIndex reads an index's plain bytes, checking that the entries'
// offsets rise from the segment base and cover the file exactly.
func decodeIndex(base int64, b []byte, fileSize int64) (indexInfo, error) {
	info := indexInfo{next: base, maxTs: math.MinInt64, keys: map[string]int{}}
	if len(b) < 12 {
		return info, errIndex
	}
	info.size = int64(binary.LittleEndian.Uint64(b))
	if info.size != fileSize {
		return info, errIndex
	}
	nkeys := binary.LittleEndian.Uint32(b[8:])
	b = b[12:]
	for range nkeys {
		if len(b) < 1 || len(b) < 1+int(b[0])+4 {
			return info, errIndex
		}
		k := string(b[1 : 1+b[0]])
		info.keys[k] = int(binary.LittleEndian.Uint32(b[1+len(k):]))
		b = b[1+len(k)+4:]
	}
	if len(b) < 4 {
		return info, errIndex
	}
	n := int(binary.LittleEndian.Uint32(b))
	b = b[4:]
	if len(b) != n*entryLen {
		return info, errIndex
	}
	info.entries = make([]entry, n)
	pos := int64(0)
	for i := range info.entries {
		e := entry{meta: decodeMeta(b), pos: int64(binary.LittleEndian.Uint64(b[metaLen:])), len: int32(binary.LittleEndian.Uint32(b[metaLen+8:]))}
		if e.meta.BaseOffset < info.next || e.meta.Records <= 0 || e.pos != pos || e.len <= 0 {
			return info, errIndex
		}
		info.next, pos = e.meta.LastOffset()+1, pos+int64(e.len)
		info.maxTs = max(info.maxTs, e.meta.MaxTimestamp)
		info.entries[i] = e
		b = b[entryLen:]
	}
	if pos != info.size {
		return info, errIndex
	}
	return info, nil
}
