package objlog

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// maxPendingBytes bounds what waits while the object store is down: past
// it, appends fail at once instead of growing memory.
const maxPendingBytes = 64 << 20

// flush is one object: the batches appended during a window, sealed as
// they arrive, written with one PUT and committed with one transaction.
type flush struct {
	object  string
	key     *dekKey // seals every chunk of the flush
	batches []*pending
	bytes   int64 // sealed bytes so far: the next chunk's position
	first   time.Time
	sealing sync.WaitGroup // appends still sealing their chunk
	done    chan struct{}  // closed when committed or failed for good
	err     error

	uploaded chan struct{} // closed when the PUT succeeded or gave up
	putErr   error
}

type pending struct {
	p     *Partition
	from  int64 // the partition's next offset before this batch (less than its base after a gap)
	meta  seglog.BatchMeta
	pos   int64
	chunk []byte
}

// flusher turns appends into flushes; their objects upload in parallel,
// and they commit one at a time in order, so that offsets become durable
// in the order they were assigned.
type flusher struct {
	s        *Store
	mu       sync.Mutex
	cur      *flush
	last     *flush // the flush cut last: the others before it commit first
	inFlight int64  // sealed bytes of the flushes cut and not yet committed
	queue    chan *flush
	failed   error // set for good (fenced, closed): appends fail
	kick     chan struct{}
	full     chan struct{}
	stop     chan struct{}
	stopped  chan struct{}
	// commitMu is held while a flush commits and its partitions advance;
	// DropPartition takes it to stop commits for a dropped partition.
	commitMu sync.Mutex
}

func newFlusher(s *Store) *flusher {
	f := &flusher{s: s, kick: make(chan struct{}, 1), full: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{}),
		queue: make(chan *flush, maxFlushesInFlight-1)}
	f.cur = f.newFlush()
	go f.run()
	go f.commitLoop()
	return f
}

func (f *flusher) newFlush() *flush {
	return &flush{object: f.s.prefix + randomName(), key: f.s.keys.current(), done: make(chan struct{})}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// add queues a batch at the partition's next offset, or at its own base
// offset when at is set (a restore: after a gap, never before the next).
// Its durable func waits a request timeout, or with a non-nil until, until
// that is closed (a restore waits as long as its caller).
func (f *flusher) add(p *Partition, m seglog.BatchMeta, data []byte, at bool, until <-chan struct{}) (int64, func() error, error) {
	const op = "objlog.Append"
	if err := f.s.writable(op); err != nil {
		return 0, nil, err
	}
	f.mu.Lock()
	n := f.cur.key.sealedLen(metaLen + len(data))
	switch {
	case f.failed != nil:
		f.mu.Unlock()
		return 0, nil, f.failed
	case p.dropped.Load():
		f.mu.Unlock()
		return 0, nil, errs.E(op, errs.NotExist, CodePartitionNotFound, "The partition does not exist")
	case f.inFlight+f.cur.bytes+int64(n) > maxPendingBytes && f.cur.bytes > 0:
		f.mu.Unlock()
		return 0, nil, errs.E(op, errs.Unavailable, CodeFlushFailed, "The object store is not keeping up: too much data waits to be written")
	}
	p.mu.Lock()
	from := p.next
	if at && m.BaseOffset < from {
		p.mu.Unlock()
		f.mu.Unlock()
		return 0, nil, errs.E(op, errs.Invalid, CodeOffsetOutOfRange, "A batch is appended at or after the partition's end")
	}
	if !at {
		m.BaseOffset = from
	}
	p.next = m.BaseOffset + int64(m.Records)
	p.mu.Unlock()
	m.Size = int32(len(data))
	fl := f.cur
	b := &pending{p: p, from: from, meta: m, pos: fl.bytes}
	fl.batches = append(fl.batches, b)
	fl.bytes += int64(n)
	fl.sealing.Add(1)
	if len(fl.batches) == 1 {
		fl.first = time.Now()
		signal(f.kick)
	}
	if fl.bytes >= int64(f.s.opts.FlushBytes) {
		signal(f.full)
	}
	f.mu.Unlock()
	// Sealed outside the lock: appends to other partitions seal in
	// parallel; the flusher waits for them before it writes.
	plain := make([]byte, 0, metaLen+len(data))
	plain = append(seglog.AppendBatchMeta(plain, m), data...)
	b.chunk = fl.key.seal(make([]byte, 0, n), f.s.chunkAAD(fl.object, b.pos), plain)
	clear(plain) // no plain copy of the records outlives the append
	fl.sealing.Done()
	timeout := f.s.opts.RequestTimeout
	return m.BaseOffset, func() error {
		var expired <-chan time.Time
		if until == nil {
			t := time.NewTimer(timeout)
			defer t.Stop()
			expired = t.C
		}
		select {
		case <-fl.done:
			return fl.err
		case <-expired:
		case <-until:
		}
		return errs.E(op, errs.Unavailable, CodeFlushFailed, "The batch is not stored yet: the object store or the database does not answer")
	}, nil
}

// run cuts flushes: when the first batch of one has waited the window, or
// it is full. Each is uploaded at once, up to maxFlushesInFlight at a time,
// and committed by commitLoop in the order its offsets were assigned.
func (f *flusher) run() {
	defer close(f.queue)
	for {
		select {
		case <-f.kick:
		case <-f.stop:
			f.mu.Lock()
			fl := f.cur
			f.cur, f.last = f.newFlush(), fl
			f.failed = errs.E("objlog.Append", errs.Conflict, CodeClosed, "The log store is closed")
			f.mu.Unlock()
			if len(fl.batches) > 0 {
				f.dispatch(fl) // one attempt: upload and commit give up once stopped
			}
			return
		}
		f.mu.Lock()
		first, empty := f.cur.first, len(f.cur.batches) == 0
		f.mu.Unlock()
		if empty {
			continue
		}
		if wait := f.s.opts.FlushWindow - time.Since(first); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-f.full:
			case <-f.stop:
			}
			t.Stop()
		}
		f.mu.Lock()
		fl := f.cur
		f.cur, f.last = f.newFlush(), fl
		f.inFlight += fl.bytes
		f.mu.Unlock()
		if len(fl.batches) > 0 {
			f.dispatch(fl)
		}
	}
}

// maxFlushesInFlight bounds the flushes uploading or waiting to commit:
// uploads overlap, so one slow PUT does not cap throughput at one object
// per round trip.
const maxFlushesInFlight = 4

func (f *flusher) dispatch(fl *flush) {
	fl.uploaded = make(chan struct{})
	f.queue <- fl // waits while maxFlushesInFlight are queued
	go f.upload(fl)
}

// retry runs try until it succeeds or says its failure is final, backing
// off between attempts; once the store is stopping it gives up after the
// first failure. It returns the last error.
func (f *flusher) retry(try func() (final bool, err error)) error {
	backoff := 50 * time.Millisecond
	for {
		final, err := try()
		if err == nil || final {
			return err
		}
		select {
		case <-f.stop:
			return err
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// upload PUTs the flush's object, retrying while the object store fails:
// offsets are assigned, so the batches cannot be skipped.
func (f *flusher) upload(fl *flush) {
	const op = "objlog.flush"
	defer close(fl.uploaded)
	fl.sealing.Wait()
	chunks := make([][]byte, len(fl.batches))
	for i, b := range fl.batches {
		chunks[i] = b.chunk
	}
	fl.putErr = f.retry(func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), f.s.opts.RequestTimeout)
		defer cancel()
		if err := f.s.bucket.put(ctx, fl.object, chunks, fl.bytes); err != nil {
			return false, errs.E(op, errs.Unavailable, CodeFlushFailed, "The batch could not be written to the object store").Because(err)
		}
		return false, nil
	})
}

// commitLoop commits the uploaded flushes in order.
func (f *flusher) commitLoop() {
	defer close(f.stopped)
	for fl := range f.queue {
		<-fl.uploaded
		err := fl.putErr
		if err == nil {
			err = f.retry(func() (bool, error) { return f.commit(fl) })
		}
		if err != nil {
			f.finish(fl, err)
		} else {
			close(fl.done)
		}
		f.mu.Lock()
		f.inFlight -= fl.bytes
		f.mu.Unlock()
	}
}

// finish fails fl for good, and with it the store: later offsets would
// have a gap. Its object is removed (or left to the next Open's sweep).
func (f *flusher) finish(fl *flush, err error) {
	f.mu.Lock()
	if f.failed == nil || errs.As(f.failed).Code == CodeClosed {
		f.failed = err
	}
	f.mu.Unlock()
	fl.err = err
	close(fl.done)
	ctx, cancel := context.WithTimeout(context.Background(), f.s.opts.RequestTimeout)
	defer cancel()
	f.s.bucket.remove(ctx, []string{fl.object})
}

// commit records the uploaded object and its batches' offsets in one
// transaction, then makes them readable. It reports whether a failure is
// final (another process moved a partition's end).
func (f *flusher) commit(fl *flush) (final bool, err error) {
	const op = "objlog.flush"
	s := f.s
	f.commitMu.Lock()
	defer f.commitMu.Unlock()
	// Batches per partition, in offset order (the order they were added).
	var order []*Partition
	byPart := map[*Partition][]*pending{}
	for _, b := range fl.batches {
		if b.p.dropped.Load() {
			continue
		}
		if _, ok := byPart[b.p]; !ok {
			order = append(order, b.p)
		}
		byPart[b.p] = append(byPart[b.p], b)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
	defer cancel()
	var fenced bool
	// Fenced by the end offsets, not by the cluster's writers' lock.
	err = s.db.TxFenced(ctx, func(tx *store.Tx) error {
		// A retry after a commit whose answer was lost finds it done.
		var one int
		err := tx.QueryRow(`SELECT 1 FROM objlog_objects WHERE name = ?`, fl.object).Scan(&one)
		if err == nil {
			return nil
		}
		if !store.IsNoRows(err) {
			return err
		}
		if _, err := tx.Exec(`INSERT INTO objlog_objects (name, store, dek_id, size, created_at) VALUES (?, ?, ?, ?, ?)`,
			fl.object, s.opts.StoreID, fl.key.id, fl.bytes, store.Time(time.Now())); err != nil {
			return err
		}
		var rows []*pending
		for _, p := range order {
			bs := byPart[p]
			from, to := bs[0].from, bs[len(bs)-1].meta.LastOffset()+1
			res, err := tx.Exec(`UPDATE objlog_partitions SET end_offset = ? WHERE pid = ? AND end_offset = ?`, to, p.pid, from)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				fenced = true
				return fmt.Errorf("partition end moved")
			}
			rows = append(rows, bs...)
		}
		return insertBatches(tx, fl.object, rows)
	})
	if err != nil {
		if fenced {
			return true, errs.E(op, errs.Conflict, CodeFenced, "Another process wrote this deployment's log; reopen it").Because(err)
		}
		return false, errs.E(op, errs.Unavailable, CodeFlushFailed, "The batch could not be recorded in the database").Because(err)
	}
	for _, b := range fl.batches {
		s.cache.put(chunkKey{fl.object, b.pos}, b.chunk)
	}
	for _, p := range order {
		p.mu.Lock()
		for _, b := range byPart[p] {
			m := b.meta
			p.index = append(p.index, entry{base: m.BaseOffset, records: m.Records, size: m.Size, maxTS: m.MaxTimestamp,
				object: fl.object, pos: b.pos, sealed: int32(len(b.chunk))})
			p.size += int64(m.Size)
			p.end = m.LastOffset() + 1
		}
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}
	return false, nil
}

// insertBatches inserts index rows, many to a statement: a flush holds
// many batches and each statement is a round trip. Statements have at most
// batchRows rows, so few distinct statements are ever prepared.
const batchRows = 32

func insertBatches(tx *store.Tx, object string, bs []*pending) error {
	for len(bs) > 0 {
		n := min(len(bs), batchRows)
		var q strings.Builder
		q.WriteString(`INSERT INTO objlog_batches (pid, base_offset, last_offset, max_ts, size, object, pos, len) VALUES `)
		args := make([]any, 0, 8*n)
		for i, b := range bs[:n] {
			if i > 0 {
				q.WriteString(", ")
			}
			q.WriteString("(?, ?, ?, ?, ?, ?, ?, ?)")
			args = append(args, b.p.pid, b.meta.BaseOffset, b.meta.LastOffset(), b.meta.MaxTimestamp, b.meta.Size, object, b.pos, len(b.chunk))
		}
		if _, err := tx.Exec(q.String(), args...); err != nil {
			return err
		}
		bs = bs[n:]
	}
	return nil
}

func (f *flusher) close() {
	close(f.stop)
	<-f.stopped
}

// sealingWith waits until every flush sealed under another key than k,
// the sealing key now, is committed (or failed): flushes commit in order,
// so it waits for the last one cut, or for the current one if it has
// batches sealed under another key (an empty one takes k at once).
func (f *flusher) sealingWith(ctx context.Context, k *dekKey) error {
	f.mu.Lock()
	wait := f.last
	if fl := f.cur; fl.key != k {
		if len(fl.batches) == 0 {
			f.cur = f.newFlush()
		} else {
			wait = fl
		}
	}
	f.mu.Unlock()
	if wait == nil {
		return nil
	}
	select {
	case <-wait.done:
		return wait.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
