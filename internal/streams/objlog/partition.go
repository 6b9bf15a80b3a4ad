package objlog

import (
	"context"
	"encoding/binary"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// Partition is one partition's log: its index of committed batches is in
// memory (and in the database), their sealed chunks in the bucket.
type Partition struct {
	s       *Store
	pid     int64
	name    string
	dropped atomic.Bool
	delMu   sync.Mutex // one DeleteBefore or Retain at a time

	mu      sync.Mutex
	start   int64
	end     int64 // committed: what reads see
	next    int64 // the next offset to assign; > end while batches are pending
	index   []entry
	size    int64
	changed chan struct{}
}

// entry is a committed batch: where its sealed chunk is and what reads and
// retention need without opening it.
type entry struct {
	base    int64
	records int32
	size    int32
	maxTS   int64
	object  string
	pos     int64
	sealed  int32
}

func (e entry) last() int64 { return e.base + int64(e.records) - 1 }

func newPartition(s *Store, pid int64, name string, start, end int64) *Partition {
	return &Partition{s: s, pid: pid, name: name, start: start, end: end, next: end, changed: make(chan struct{})}
}

func (p *Partition) loadIndex(ctx context.Context) error {
	return p.s.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT base_offset, last_offset, max_ts, size, object, pos, len FROM objlog_batches WHERE pid = ? ORDER BY base_offset`, p.pid)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e entry
			var last int64
			if err := rows.Scan(&e.base, &last, &e.maxTS, &e.size, &e.object, &e.pos, &e.sealed); err != nil {
				return err
			}
			e.records = int32(last - e.base + 1)
			p.index = append(p.index, e)
			p.size += int64(e.size)
		}
		return rows.Err()
	})
}

// AppendAsync queues the batch for the store's next flush and returns its
// offset; durable waits until the flush is committed (or gives up after
// the request timeout: calling it again waits again, so a retried
// idempotent batch is acknowledged once its flush lands).
func (p *Partition) AppendAsync(ctx context.Context, m seglog.BatchMeta, data []byte) (int64, func() error, error) {
	return p.s.fl.add(p, m, data, false, nil)
}

// AppendAtAsync queues the batch at its own base offset, at or after the
// partition's next offset (a restore: a compacted log has gaps); durable
// waits until the batch is stored, or ctx ends.
func (p *Partition) AppendAtAsync(ctx context.Context, m seglog.BatchMeta, data []byte) (int64, func() error, error) {
	return p.s.fl.add(p, m, data, true, ctx.Done())
}

// AppendAt is AppendAtAsync, waiting until the batch is stored.
func (p *Partition) AppendAt(ctx context.Context, m seglog.BatchMeta, data []byte) (int64, error) {
	off, durable, err := p.AppendAtAsync(ctx, m, data)
	if err == nil {
		err = durable()
	}
	return off, err
}

// chunkAAD binds a chunk to its store, object and place in it.
func (s *Store) chunkAAD(object string, pos int64) []byte {
	return aad("chunk", s.opts.StoreID, []byte(object), binary.BigEndian.AppendUint64(nil, uint64(pos)))
}

// Read returns batches with LastOffset >= from, at least one if any, up to
// maxBytes.
func (p *Partition) Read(ctx context.Context, from int64, maxBytes int32) ([]seglog.StoredBatch, error) {
	buf, _, metas, err := p.ReadAppend(ctx, from, maxBytes, nil)
	if err != nil {
		return nil, err
	}
	out := make([]seglog.StoredBatch, len(metas))
	pos := 0
	for i, m := range metas {
		out[i] = seglog.StoredBatch{Meta: m, Data: buf[pos : pos+int(m.Size) : pos+int(m.Size)]}
		pos += int(m.Size)
	}
	return out, nil
}

// ReadAppend is Read with the batches' bytes appended to dst.
func (p *Partition) ReadAppend(ctx context.Context, from int64, maxBytes int32, dst []byte) ([]byte, []byte, []seglog.BatchMeta, error) {
	const op = "objlog.Read"
	if err := p.s.usable(op); err != nil {
		return dst, nil, nil, err
	}
	p.mu.Lock()
	if from < p.start || from > p.end {
		p.mu.Unlock()
		return dst, nil, nil, errs.E(op, errs.Invalid, CodeOffsetOutOfRange, "The offset is outside the partition's log")
	}
	i := sort.Search(len(p.index), func(i int) bool { return p.index[i].last() >= from })
	var want []entry
	total := 0
	for ; i < len(p.index); i++ {
		e := p.index[i]
		if len(want) > 0 && total+int(e.size) > int(maxBytes) {
			break
		}
		want = append(want, e)
		total += int(e.size)
	}
	p.mu.Unlock()
	sealed, err := p.s.chunks(ctx, want)
	if err != nil {
		return dst, nil, nil, err
	}
	start := len(dst)
	metas := make([]seglog.BatchMeta, len(want))
	for k, e := range want {
		mark := len(dst)
		dst, err = p.s.keys.open(dst, p.s.chunkAAD(e.object, e.pos), sealed[k])
		if err != nil || len(dst)-mark < metaLen {
			return dst[:start], nil, nil, errs.E(op, errs.Unprocessable, CodeCorrupt, "Stored data is damaged or was sealed with another key").Because(err)
		}
		metas[k] = seglog.ParseBatchMeta(dst[mark:])
		if metas[k].BaseOffset != e.base || metas[k].Records != e.records {
			return dst[:start], nil, nil, errs.E(op, errs.Unprocessable, CodeCorrupt, "A stored batch is not the one its index row names")
		}
		dst = append(dst[:mark], dst[mark+metaLen:]...)
	}
	return dst, dst[start:], metas, nil
}

// chunks returns the sealed chunks of entries: from the cache, else with
// one ranged GET per object covering the missing ones.
func (s *Store) chunks(ctx context.Context, es []entry) ([][]byte, error) {
	out := make([][]byte, len(es))
	type span struct{ from, to int64 }
	missing := map[string]*span{}
	for i, e := range es {
		if b, ok := s.cache.get(chunkKey{e.object, e.pos}); ok {
			out[i] = b
			continue
		}
		sp := missing[e.object]
		if sp == nil {
			sp = &span{e.pos, e.pos}
			missing[e.object] = sp
		}
		sp.from, sp.to = min(sp.from, e.pos), max(sp.to, e.pos+int64(e.sealed))
	}
	if len(missing) == 0 {
		return out, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	for object, sp := range missing {
		b, err := s.bucket.getRange(ctx, object, sp.from, sp.to-sp.from)
		if err != nil {
			return nil, err
		}
		for i, e := range es {
			if e.object == object && out[i] == nil {
				c := b[e.pos-sp.from : e.pos-sp.from+int64(e.sealed)]
				out[i] = c
				s.cache.put(chunkKey{e.object, e.pos}, append([]byte(nil), c...))
			}
		}
	}
	return out, nil
}

// FirstBatchSize is the size of the first batch a read from offset
// returns, or 0 when there is none.
func (p *Partition) FirstBatchSize(from int64) int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if from < p.start {
		return 0
	}
	i := sort.Search(len(p.index), func(i int) bool { return p.index[i].last() >= from })
	if i == len(p.index) {
		return 0
	}
	return p.index[i].size
}

func (p *Partition) StartOffset() int64 { p.mu.Lock(); defer p.mu.Unlock(); return p.start }
func (p *Partition) EndOffset() int64   { p.mu.Lock(); defer p.mu.Unlock(); return p.end }
func (p *Partition) SizeBytes() int64   { p.mu.Lock(); defer p.mu.Unlock(); return p.size }

// Changed is closed when batches are committed.
func (p *Partition) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// OffsetForTimestamp is the offset of the first batch whose max timestamp
// is at least ts, or the end offset.
func (p *Partition) OffsetForTimestamp(ts int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.index {
		if e.maxTS >= ts {
			return max(e.base, p.start)
		}
	}
	return p.end
}

// Tail returns the metas of the last n batches (producer state after a
// restart); it reads their chunks, so it returns fewer when that fails.
func (p *Partition) Tail(n int) []seglog.BatchMeta {
	p.mu.Lock()
	es := append([]entry(nil), p.index[max(0, len(p.index)-n):]...)
	p.mu.Unlock()
	if len(es) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.s.opts.RequestTimeout)
	defer cancel()
	sealed, err := p.s.chunks(ctx, es)
	if err != nil {
		return nil
	}
	var out []seglog.BatchMeta
	for k, e := range es {
		plain, err := p.s.keys.open(nil, p.s.chunkAAD(e.object, e.pos), sealed[k])
		if err != nil || len(plain) < metaLen {
			continue
		}
		out = append(out, seglog.ParseBatchMeta(plain))
	}
	return out
}

// DeleteBefore moves the log start to offset (at most the end) and
// deletes the batches wholly before it, then the objects left unnamed.
func (p *Partition) DeleteBefore(offset int64) error {
	const op = "objlog.DeleteBefore"
	if err := p.s.writable(op); err != nil {
		return err
	}
	p.delMu.Lock()
	defer p.delMu.Unlock()
	p.mu.Lock()
	offset = min(offset, p.end)
	if offset <= p.start {
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	err := p.s.deleteRows(op, func(tx *store.Tx) error {
		if _, err := tx.Exec(`UPDATE objlog_partitions SET start_offset = ? WHERE pid = ?`, offset, p.pid); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM objlog_batches WHERE pid = ? AND last_offset < ?`, p.pid, offset)
		return err
	})
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.start = max(p.start, offset)
	cut := 0
	for cut < len(p.index) && p.index[cut].last() < offset {
		p.size -= int64(p.index[cut].size)
		cut++
	}
	p.index = append([]entry(nil), p.index[cut:]...)
	return nil
}

// Retain deletes the oldest batches while they are older than retentionMs
// or the log is over retentionBytes without them (-1: no limit); like
// seglog with its active segment, it never deletes the newest batch.
func (p *Partition) Retain(now time.Time, retentionMs, retentionBytes int64) error {
	p.mu.Lock()
	size, cut := p.size, 0
	for cut < len(p.index)-1 {
		e := p.index[cut]
		if !(retentionMs >= 0 && e.maxTS < now.UnixMilli()-retentionMs || retentionBytes >= 0 && size-int64(e.size) >= retentionBytes) {
			break
		}
		size -= int64(e.size)
		cut++
	}
	var offset int64
	if cut > 0 {
		offset = p.index[cut-1].last() + 1
	}
	p.mu.Unlock()
	if cut == 0 {
		return nil
	}
	return p.DeleteBefore(offset)
}
