package seglog

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/durable"
	"github.com/keyline/keyline/internal/errs"
)

// Partition is one log: segments of batches at rising offsets from its
// log-start offset, contiguous unless compaction left gaps.
type Partition struct {
	store *Store
	name  string
	dir   string
	// stream names the partition in its blocks' additional data: the name
	// and a random incarnation chosen at creation, so blocks of a dropped
	// partition do not open in a new one of the same name.
	stream      string
	incarnation []byte

	mu      sync.RWMutex
	segs    []*segment // oldest first; the last is active
	start   int64      // log-start offset
	changed chan struct{}
	closed  bool // closed or dropped: changed is closed for good
	dropped bool
	cleaned int64 // the log cleaner's checkpoint (see Compact)

	cacheMu sync.Mutex
	cache   []*segment // sealed segments whose entries are loaded, oldest first

	aheadState
	roll rollPolicy
}

// cachedSegments bounds the sealed segments per partition whose entries
// stay in memory.
const cachedSegments = 4

var (
	errGap             = errors.New("segments are not contiguous")
	errPartitionRecord = errors.New("partition has no identity record")
)

const incarnationLen = 16

// partitionRecord is the metadata record of a partition: its log-start
// offset and incarnation.
func partitionRecord(start int64, incarnation []byte) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, uint64(start)), incarnation...)
}

const maxBatchBytes = maxBodyLen - 1<<10

func newSegment(base int64, f *os.File) *segment {
	return &segment{base: base, f: f, next: base, keys: map[string]int{}, maxTs: math.MinInt64}
}

func (s *Store) loadPartition(name string, kr *keyring) (*Partition, error) {
	p := &Partition{store: s, name: name, dir: filepath.Join(s.dir, "p", name), changed: make(chan struct{})}
	bases, err := segmentBases(p.dir)
	if err != nil {
		return nil, err
	}
	if err := removeOrphanIndexes(p.dir, bases); err != nil {
		return nil, err
	}
	v, ok := s.meta.get(nsPartition, name)
	if !ok || len(v) != 8+incarnationLen {
		return nil, errPartitionRecord
	}
	p.start = int64(binary.LittleEndian.Uint64(v))
	p.incarnation = v[8:]
	p.stream = name + "/" + hex.EncodeToString(p.incarnation)
	for i, base := range bases {
		seg, err := p.openSegment(base, kr, i == len(bases)-1)
		if err == nil && i > 0 && seg.base != p.segs[i-1].end() {
			seg.f.Close()
			err = errGap
		}
		if err != nil {
			p.closeSegments()
			return nil, err
		}
		p.segs = append(p.segs, seg)
	}
	if len(p.segs) == 0 {
		seg, err := p.createSegment(p.start)
		if err != nil {
			return nil, err
		}
		p.segs = append(p.segs, seg)
	}
	p.start = max(p.start, p.segs[0].base)
	if p.start > p.active().end() {
		// Unsynced appends lost in a crash after a synced DeleteBefore: the
		// log resumes at its start offset, never reusing offsets below it.
		seg, err := p.createSegment(p.start)
		if err != nil {
			p.closeSegments()
			return nil, err
		}
		p.segs = append(p.segs, seg)
	}
	// Segments wholly below the log start outlive a crash in truncateFront.
	cut := 0
	for cut < len(p.segs)-1 && p.segs[cut].end() <= p.start {
		cut++
	}
	if err := p.removeSegments(cut); err != nil {
		p.closeSegments()
		return nil, err
	}
	return p, nil
}

// removeOrphanIndexes removes index files whose segment is gone (retention
// removes the segment first).
func removeOrphanIndexes(dir string, bases []int64) error {
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	have := map[string]bool{}
	for _, b := range bases {
		have[indexName(b)] = true
	}
	for _, de := range des {
		if strings.HasSuffix(de.Name(), indexExt) && !have[de.Name()] {
			if err := os.Remove(filepath.Join(dir, de.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// openSegment loads one segment. A sealed segment trusts its index when
// the index matches the file; otherwise, and always for the active segment,
// it scans and authenticates every block. Only the active segment may have
// a torn tail, which is cut.
func (p *Partition) openSegment(base int64, kr *keyring, active bool) (*segment, error) {
	f, err := os.OpenFile(filepath.Join(p.dir, segmentName(base)), os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	seg := newSegment(base, f)
	err = p.fillSegment(seg, kr, active)
	if err != nil {
		f.Close()
		return nil, err
	}
	return seg, nil
}

func (p *Partition) fillSegment(seg *segment, kr *keyring, active bool) error {
	st, err := seg.f.Stat()
	if err != nil {
		return err
	}
	idxPath := filepath.Join(p.dir, indexName(seg.base))
	if !active && p.loadIndex(seg, kr, st.Size()) == nil {
		return nil
	}
	b, err := readAll(seg.f, st.Size())
	if err != nil {
		return err
	}
	end, err := scanSegment(seg, b, kr, p.stream)
	if err != nil {
		return err
	}
	seg.size = end
	if end < st.Size() {
		if !active {
			return errShort
		}
		if err := cutTail(seg.f, end); err != nil {
			return err
		}
	}
	if active {
		// An active segment has no index; one left here would be stale.
		if err := os.Remove(idxPath); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	if err := p.writeIndex(seg, kr); err != nil {
		return err
	}
	seg.entries = nil
	return nil
}

// loadIndex fills a sealed segment's summary from its index.
func (p *Partition) loadIndex(seg *segment, kr *keyring, fileSize int64) error {
	info, keyID, err := p.readIndex(seg.base, kr, fileSize)
	if err != nil {
		return err
	}
	seg.size, seg.next, seg.maxTs, seg.keys, seg.indexKey = info.size, info.next, info.maxTs, info.keys, keyID
	return nil
}

func (p *Partition) readIndex(base int64, kr *keyring, fileSize int64) (indexInfo, string, error) {
	b, err := os.ReadFile(filepath.Join(p.dir, indexName(base)))
	if err != nil {
		return indexInfo{}, "", err
	}
	h, err := parseHeader(b)
	if err != nil {
		return indexInfo{}, "", err
	}
	if h.blockLen() != len(b) {
		return indexInfo{}, "", errIndex
	}
	plain, err := kr.open(b, h, blockID{kind: kindIndex, stream: p.stream, base: base})
	if err != nil {
		return indexInfo{}, "", err
	}
	info, err := decodeIndex(base, plain, fileSize)
	return info, h.keyID, err
}

// entriesOf returns a segment's entries. The caller holds p.mu (read or
// write). A sealed segment's come from the cache, else from its index, else
// (index lost) from authenticating the segment itself.
func (p *Partition) entriesOf(seg *segment, kr *keyring) ([]entry, error) {
	if seg == p.active() {
		return seg.entries, nil
	}
	if es := seg.cached.Load(); es != nil {
		return *es, nil
	}
	info, _, err := p.readIndex(seg.base, kr, seg.size)
	if err != nil || info.next != seg.next {
		b, rerr := readAll(seg.f, seg.size)
		if rerr != nil {
			return nil, rerr
		}
		scan := newSegment(seg.base, nil)
		end, serr := scanSegment(scan, b, kr, p.stream)
		if serr == nil && (end != seg.size || scan.next != seg.next) {
			serr = errIndex
		}
		if serr != nil {
			return nil, serr
		}
		info.entries = scan.entries
	}
	p.cacheEntries(seg, info.entries)
	return info.entries, nil
}

// cacheEntries keeps es as seg's entries, evicting the oldest cached
// segment's beyond the bound.
func (p *Partition) cacheEntries(seg *segment, es []entry) {
	seg.cached.Store(&es)
	p.cacheMu.Lock()
	defer p.cacheMu.Unlock()
	p.cache = append(p.cache, seg)
	for len(p.cache) > cachedSegments {
		if old := p.cache[0]; !slices.Contains(p.cache[1:], old) {
			old.cached.Store(nil)
		}
		p.cache = p.cache[1:]
	}
}

func (p *Partition) writeIndex(seg *segment, kr *keyring) error {
	blk := kr.seal(nil, blockID{kind: kindIndex, stream: p.stream, base: seg.base}, encodeIndex(seg))
	if err := writeFileAtomic(filepath.Join(p.dir, indexName(seg.base)), blk); err != nil {
		return err
	}
	seg.indexKey = kr.current
	return nil
}

func (p *Partition) createSegment(base int64) (*segment, error) {
	f, err := os.OpenFile(filepath.Join(p.dir, segmentName(base)), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, err
	}
	if err := durable.SyncDir(p.dir); err != nil {
		f.Close()
		return nil, err
	}
	return newSegment(base, f), nil
}

func (p *Partition) active() *segment { return p.segs[len(p.segs)-1] }

// rollLocked seals the active segment (synced, with its index) and starts
// a new one at its end.
func (p *Partition) rollLocked(kr *keyring) error {
	old := p.active()
	if err := old.f.Sync(); err != nil {
		return err
	}
	if err := p.writeIndex(old, kr); err != nil {
		return err
	}
	seg, err := p.createSegment(old.end())
	if err != nil {
		return err
	}
	p.segs = append(p.segs, seg)
	p.cacheEntries(old, old.entries)
	old.entries = nil
	return nil
}

func (p *Partition) check(op string) error {
	if err := p.store.usable(op); err != nil {
		return err
	}
	if p.dropped {
		return errs.E(op, errs.NotExist, CodePartitionNotFound, "The partition was dropped")
	}
	return nil
}

func ctxError(op string, err error) error {
	return errs.E(op, errs.Unavailable, "CANCELED", "The operation was canceled").Because(err)
}

// Append adds a batch at the end of the log and returns its base offset
// (the end offset before the append). With Options.Sync it returns once the
// batch is on disk; concurrent appends share the fsync.
func (p *Partition) Append(ctx context.Context, m BatchMeta, data []byte) (int64, error) {
	return waitDurable(p.AppendAsync(ctx, m, data))
}

// waitDurable waits for an AppendAsync's batch to be on disk.
func waitDurable(base int64, durable func() error, err error) (int64, error) {
	if err == nil && durable != nil {
		err = durable()
	}
	if err != nil {
		return 0, err
	}
	return base, nil
}

// AppendAsync is Append returning before the fsync: the batch is written
// and has its offsets, and durable (nil without Options.Sync) waits until
// it is on disk. A server acknowledges the batch only after durable
// returns nil, and meanwhile takes further batches, which share the fsync.
func (p *Partition) AppendAsync(ctx context.Context, m BatchMeta, data []byte) (base int64, durable func() error, err error) {
	return p.appendAsync(ctx, m, data, -1)
}

// appendAsync is AppendAsync at offset at, or at the end when at < 0.
func (p *Partition) appendAsync(ctx context.Context, m BatchMeta, data []byte, at int64) (base int64, durable func() error, err error) {
	const op = "seglog.Append"
	if err := ctx.Err(); err != nil {
		return 0, nil, ctxError(op, err)
	}
	if m.Records <= 0 {
		return 0, nil, errs.E(op, errs.Invalid, "BATCH_INVALID", "A batch covers at least one offset")
	}
	if len(data) > maxBatchBytes {
		return 0, nil, errs.E(op, errs.TooLarge, "BATCH_TOO_LARGE", "The batch is too large")
	}
	p.mu.Lock()
	if err := p.check(op); err != nil {
		p.mu.Unlock()
		return 0, nil, err
	}
	// Loaded under the lock so that re-encryption, which rolls every
	// partition under this lock after switching keys, never finds an old
	// key's block in a new segment.
	kr := p.store.keys.Load()
	seg := p.active()
	if p.shouldRoll(seg, int64(kr.blockSize(metaLen+len(data))), time.Now()) {
		if err := p.rollLocked(kr); err != nil {
			p.mu.Unlock()
			return 0, nil, errs.Internalf(op, err)
		}
		seg = p.active()
	}
	if at >= 0 && at < seg.end() {
		p.mu.Unlock()
		return 0, nil, outOfRange(op)
	}
	m.BaseOffset = max(seg.end(), at)
	m.Size = int32(len(data))
	var mb [metaLen]byte
	buf := p.store.blockBuf()
	// A large batch is written, and its writeback started, piece by piece
	// while the rest of it is sealed.
	bw := &blockWriter{f: seg.f, off: seg.size, total: kr.blockSize(metaLen + len(data)), kick: p.store.opts.Sync}
	blk, err := kr.sealEmit((*buf)[:0], blockID{kind: kindData, stream: p.stream, base: seg.base, pos: seg.size}, bw.emit, encodeMeta(mb[:0], m), data)
	blkLen := len(blk)
	*buf = blk
	p.store.putBlockBuf(buf)
	if err != nil {
		// Drop a partial block now; if that fails too, the next append
		// overwrites it or Open cuts it.
		seg.f.Truncate(seg.size)
		p.mu.Unlock()
		return 0, nil, errs.Internalf(op, err)
	}
	seg.add(entry{meta: m, pos: seg.size, len: int32(blkLen)}, kr.current)
	seg.size += int64(blkLen)
	close(p.changed)
	p.changed = make(chan struct{})
	f := seg.f
	p.mu.Unlock()
	if !p.store.opts.Sync {
		return m.BaseOffset, nil, nil
	}
	return m.BaseOffset, func() error {
		if err := p.store.commit.wait(f); err != nil {
			return errs.Internalf(op, err)
		}
		return nil
	}, nil
}

func (p *Partition) endLocked() int64 { return p.active().end() }

func outOfRange(op string) error {
	return errs.E(op, errs.Invalid, CodeOffsetOutOfRange, "The offset is outside the log")
}

// readRun is a stretch of consecutive blocks of one segment read at once.
type readRun struct {
	base    int64
	buf     []byte
	entries []entry
}

// Read returns the batches with LastOffset >= from, in order, up to about
// maxBytes of batch data, and at least one batch when one exists.
func (p *Partition) Read(ctx context.Context, from int64, maxBytes int32) ([]StoredBatch, error) {
	const op = "seglog.Read"
	kr, runs, err := p.readRuns(ctx, op, from, maxBytes, func(n int) []byte { return make([]byte, n) })
	if err != nil {
		return nil, err
	}
	var out []StoredBatch
	for _, r := range runs {
		first := r.entries[0].pos
		for _, e := range r.entries {
			b := r.buf[e.pos-first : e.pos-first+int64(e.len)]
			plain, err := openBatch(b, kr, blockID{kind: kindData, stream: p.stream, base: r.base, pos: e.pos})
			if err != nil {
				return nil, dataError(op, err)
			}
			if m := decodeMeta(plain); m != e.meta {
				return nil, dataError(op, errBatch)
			}
			out = append(out, StoredBatch{Meta: e.meta, Data: plain[metaLen:]})
		}
	}
	return out, nil
}

// ReadAppend is Read for a server that sends the batches on at once: it
// decrypts them straight into dst, back to back, without a buffer of its
// own per call. It returns dst grown (to reuse for the next call), batches
// (the part of it that holds the batches' bytes, which the next call with
// the same dst overwrites) and the batches' headers, in order.
func (p *Partition) ReadAppend(ctx context.Context, from int64, maxBytes int32, dst []byte) (buf, batches []byte, metas []BatchMeta, err error) {
	if ra := p.takeAhead(ctx, from, maxBytes); ra != nil {
		var ok bool
		buf, batches, metas, ok = p.fromAhead(ra, from, dst)
		go p.releaseAhead(ra)
		if ok {
			p.store.aheadHits.Add(1)
			p.readOn(from, maxBytes, batches, metas)
			return buf, batches, metas, nil
		}
	}
	buf, batches, metas, err = p.readAppend(ctx, from, maxBytes, dst)
	if err == nil {
		p.readOn(from, maxBytes, batches, metas)
	}
	return buf, batches, metas, err
}

// readOn starts a read-ahead after a large read that left more behind it,
// unless the read repeated a recent one from the same offset.
func (p *Partition) readOn(from int64, maxBytes int32, batches []byte, metas []BatchMeta) {
	if len(batches) < aheadMinBytes || len(metas) == 0 || p.repeated(from) {
		return
	}
	if next := metas[len(metas)-1].LastOffset() + 1; next < p.EndOffset() {
		p.startReadAhead(next, maxBytes)
	}
}

func (p *Partition) readAppend(ctx context.Context, from int64, maxBytes int32, dst []byte) (buf, batches []byte, metas []BatchMeta, err error) {
	const op = "seglog.Read"
	var pooled []*[]byte
	defer func() {
		for _, b := range pooled {
			p.store.putBlockBuf(b)
		}
	}()
	kr, runs, err := p.readRuns(ctx, op, from, maxBytes, func(n int) []byte {
		b := p.store.blockBuf()
		pooled = append(pooled, b)
		*b = slices.Grow((*b)[:0], n)[:n]
		return *b
	})
	if err != nil {
		return dst, nil, nil, err
	}
	total := 0
	for _, r := range runs {
		for _, e := range r.entries {
			total += int(e.meta.Size)
			metas = append(metas, e.meta)
		}
	}
	// Each block opens into its batch's final place, its header landing
	// just before it: in the tail of the previous batch, which is why the
	// blocks open last to first, or, for the first, in metaLen bytes of
	// headroom.
	start := len(dst) + metaLen
	dst = slices.Grow(dst, metaLen+total)[:start+total]
	end := len(dst)
	for ri := len(runs) - 1; ri >= 0; ri-- {
		r := runs[ri]
		first := r.entries[0].pos
		for ei := len(r.entries) - 1; ei >= 0; ei-- {
			e := r.entries[ei]
			at := end - int(e.meta.Size)
			b := r.buf[e.pos-first : e.pos-first+int64(e.len)]
			if err := openBatchTo(dst[at-metaLen:at-metaLen:end], b, kr, blockID{kind: kindData, stream: p.stream, base: r.base, pos: e.pos}, metaLen+int(e.meta.Size)); err != nil {
				return dst, nil, nil, dataError(op, err)
			}
			if m := decodeMeta(dst[at-metaLen : at]); m != e.meta {
				return dst, nil, nil, dataError(op, errBatch)
			}
			end = at
		}
	}
	return dst, dst[start:], metas, nil
}

// readRuns finds the blocks of the batches Read returns and reads them,
// each stretch of one segment into a buffer from alloc.
func (p *Partition) readRuns(ctx context.Context, op string, from int64, maxBytes int32, alloc func(int) []byte) (*keyring, []readRun, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, ctxError(op, err)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if err := p.check(op); err != nil {
		return nil, nil, err
	}
	// The keyring is taken while the lock keeps re-encryption from swapping
	// these segments, so it still holds whatever key sealed what is read.
	kr := p.store.keys.Load()
	end := p.endLocked()
	if from < p.start || from > end {
		return nil, nil, outOfRange(op)
	}
	var runs []readRun
	total, full := int64(0), false
	si := sort.Search(len(p.segs), func(i int) bool { return p.segs[i].end() > from })
	for ; si < len(p.segs) && !full; si++ {
		seg := p.segs[si]
		es, err := p.entriesOf(seg, kr)
		if err != nil {
			return nil, nil, dataError(op, err)
		}
		i := sort.Search(len(es), func(i int) bool { return es[i].meta.LastOffset() >= from })
		j := i
		for ; j < len(es); j++ {
			size := int64(es[j].meta.Size)
			if total > 0 && total+size > int64(maxBytes) {
				full = true
				break
			}
			total += size
		}
		if j == i {
			continue
		}
		// Stretches of at most maxPooledBlock bytes (a batch larger than
		// that alone), so that a large read reuses pooled buffers instead
		// of allocating, and clearing, one the size of the whole read.
		for k := i; k < j; {
			l := k + 1
			for l < j && es[l].pos+int64(es[l].len)-es[k].pos <= maxPooledBlock {
				l++
			}
			first, last := es[k], es[l-1]
			buf := alloc(int(last.pos + int64(last.len) - first.pos))
			if _, err := seg.f.ReadAt(buf, first.pos); err != nil {
				return nil, nil, errs.Internalf(op, err)
			}
			runs = append(runs, readRun{base: seg.base, buf: buf, entries: es[k:l]})
			k = l
		}
	}
	return kr, runs, nil
}

// openBatchTo opens the data block b into dst's spare capacity, where its
// plain bytes (want of them) must land exactly.
func openBatchTo(dst, b []byte, kr *keyring, id blockID, want int) error {
	h, err := parseHeader(b)
	if err != nil {
		return err
	}
	if h.blockLen() != len(b) {
		return errHeader
	}
	plain, err := kr.openTo(dst, b, h, id)
	if err != nil {
		return err
	}
	if len(plain) != want || (want > 0 && &plain[0] != &dst[:1][0]) {
		return errBatch
	}
	return nil
}

func openBatch(b []byte, kr *keyring, id blockID) ([]byte, error) {
	h, err := parseHeader(b)
	if err != nil {
		return nil, err
	}
	if h.blockLen() != len(b) {
		return nil, errHeader
	}
	plain, err := kr.open(b, h, id)
	if err != nil {
		return nil, err
	}
	if len(plain) < metaLen {
		return nil, errBatch
	}
	return plain, nil
}

// FirstBatchSize is the size of the batch that holds offset from, the
// first that Read(from) returns, or 0 when there is none (or its segment's
// index cannot be read, which Read reports).
func (p *Partition) FirstBatchSize(from int64) int32 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.check("seglog.FirstBatchSize") != nil || from < p.start {
		return 0
	}
	si := sort.Search(len(p.segs), func(i int) bool { return p.segs[i].end() > from })
	if si == len(p.segs) {
		return 0
	}
	es, err := p.entriesOf(p.segs[si], p.store.keys.Load())
	if err != nil {
		return 0
	}
	i := sort.Search(len(es), func(i int) bool { return es[i].meta.LastOffset() >= from })
	if i == len(es) {
		return 0
	}
	return es[i].meta.Size
}

// StartOffset is the log-start offset.
func (p *Partition) StartOffset() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.start
}

// EndOffset is the offset the next batch gets.
func (p *Partition) EndOffset() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.endLocked()
}

// OffsetForTimestamp is the first offset of the first batch whose
// MaxTimestamp >= ts, or EndOffset when there is none. A segment whose index
// cannot be read is passed over (Read reports the damage).
func (p *Partition) OffsetForTimestamp(ts int64) int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	kr := p.store.keys.Load()
	for _, seg := range p.segs {
		if seg.maxTs < ts {
			continue
		}
		es, _ := p.entriesOf(seg, kr)
		for _, e := range es {
			if e.meta.LastOffset() >= p.start && e.meta.MaxTimestamp >= ts {
				return max(e.meta.BaseOffset, p.start)
			}
		}
	}
	return p.endLocked()
}

// Tail returns the last n batch headers, oldest first; it stops early at a
// segment whose index cannot be read.
func (p *Partition) Tail(n int) []BatchMeta {
	p.mu.RLock()
	defer p.mu.RUnlock()
	kr := p.store.keys.Load()
	var out []BatchMeta
	for si := len(p.segs) - 1; si >= 0 && len(out) < n; si-- {
		es, err := p.entriesOf(p.segs[si], kr)
		if err != nil {
			break
		}
		for i := len(es) - 1; i >= 0 && len(out) < n && es[i].meta.LastOffset() >= p.start; i-- {
			out = append(out, es[i].meta)
		}
	}
	slices.Reverse(out)
	return out
}

// Changed returns a channel closed when EndOffset next grows (or the
// partition is closed), for long-poll fetches.
func (p *Partition) Changed() <-chan struct{} {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.changed
}

// SizeBytes is the bytes of the partition's segments.
func (p *Partition) SizeBytes() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	var n int64
	for _, s := range p.segs {
		n += s.size
	}
	return n
}

// DeleteBefore moves the log-start offset to offset and deletes the
// segments wholly before it.
func (p *Partition) DeleteBefore(offset int64) error {
	const op = "seglog.DeleteBefore"
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.check(op); err != nil {
		return err
	}
	if offset <= p.start {
		return nil
	}
	if offset > p.endLocked() {
		return outOfRange(op)
	}
	if offset == p.endLocked() && len(p.active().entries) > 0 {
		if err := p.rollLocked(p.store.keys.Load()); err != nil {
			return errs.Internalf(op, err)
		}
	}
	cut := 0
	for cut < len(p.segs)-1 && p.segs[cut].end() <= offset {
		cut++
	}
	return p.truncateFront(op, offset, cut)
}

// Retain deletes whole segments, never the active one, whose newest batch
// is older than retentionMs before now, then the oldest while the rest
// still holds retentionBytes (as Kafka does). A value < 0 means unlimited.
func (p *Partition) Retain(now time.Time, retentionMs, retentionBytes int64) error {
	const op = "seglog.Retain"
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := p.check(op); err != nil {
		return err
	}
	cut := 0
	if retentionMs >= 0 {
		limit := now.UnixMilli() - retentionMs
		for cut < len(p.segs)-1 && p.segs[cut].maxTs < limit {
			cut++
		}
	}
	if retentionBytes >= 0 {
		var size int64
		for _, s := range p.segs[cut:] {
			size += s.size
		}
		for cut < len(p.segs)-1 && size-p.segs[cut].size >= retentionBytes {
			size -= p.segs[cut].size
			cut++
		}
	}
	if cut == 0 {
		return nil
	}
	return p.truncateFront(op, max(p.start, p.segs[cut].base), cut)
}

// truncateFront records the new log-start offset durably, then removes the
// first cut segments. In that order a crash can leave files below the start
// offset (removed at the next call) but never expose deleted offsets again.
func (p *Partition) truncateFront(op string, start int64, cut int) error {
	if err := p.store.writeMeta(op, opPut, nsPartition, p.name, partitionRecord(start, p.incarnation)); err != nil {
		return err
	}
	p.start = start
	if err := p.removeSegments(cut); err != nil {
		return errs.Internalf(op, err)
	}
	return nil
}

// removeSegments deletes the first cut segments.
func (p *Partition) removeSegments(cut int) error {
	if cut == 0 {
		return nil
	}
	for _, seg := range p.segs[:cut] {
		seg.f.Close()
		if err := os.Remove(filepath.Join(p.dir, segmentName(seg.base))); err != nil {
			return err
		}
		if err := os.Remove(filepath.Join(p.dir, indexName(seg.base))); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	gone := p.segs[:cut]
	p.segs = append([]*segment(nil), p.segs[cut:]...)
	p.cacheMu.Lock()
	p.cache = slices.DeleteFunc(p.cache, func(s *segment) bool { return slices.Contains(gone, s) })
	p.cacheMu.Unlock()
	return durable.SyncDir(p.dir)
}

func (p *Partition) keyIDs(set map[string]bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	for _, s := range p.segs {
		for k := range s.keys {
			set[k] = true
		}
		set[s.indexKey] = true
	}
}

func (p *Partition) closeSegments() error {
	p.discardAhead()
	var first error
	for _, s := range p.segs {
		if err := s.f.Sync(); err != nil && first == nil {
			first = err
		}
		s.f.Close()
	}
	if !p.closed {
		p.closed = true
		close(p.changed)
	}
	return first
}

func (p *Partition) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closeSegments()
}
