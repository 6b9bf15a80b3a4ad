package seglog

import (
	"context"
	"slices"
	"sync"
	"time"
)

// Read-ahead. A consumer catching up reads a partition in order, one
// fetch at a time: it asks for the next batches only after the last have
// reached it. Each ReadAppend that returns a large read and leaves more
// of the log behind it starts preparing the next read of the same size
// on a goroutine of its own, so that reading and decrypting it overlap
// the sending and the consumer's handling of the last. The next
// ReadAppend from where this one ended takes the prepared batches. A
// partition keeps up to aheadSlots prepared reads, so that consumers of
// several groups catching up at different offsets do not throw away each
// other's.
//
// What is prepared is plain data in memory only, as a fetch's response
// is: it is wiped when taken, replaced or discarded, and a closed or
// dropped partition discards it. It is served only while the partition is
// open and still holds the offset it starts at; the log only grows at its
// end, so batches read earlier are still the log's batches (a prepared
// read may hold fewer than the log has by now, which a read may always
// return).
const (
	// aheadMinBytes is the least a read returns to start a read-ahead: a
	// consumer at the tail reads little and would find nothing ahead.
	aheadMinBytes = 32 << 10
	// aheadMaxBytes bounds one prepared read; aheadStoreBytes bounds all
	// of a store's (deployment's) at once.
	aheadMaxBytes   = 8 << 20
	aheadStoreBytes = 64 << 20
	aheadSlots      = 4
)

type readAhead struct {
	from     int64
	maxBytes int32
	done     chan struct{} // closed when the read below is finished
	buf      *[]byte       // holds batches
	batches  []byte
	metas    []BatchMeta
	err      error
}

// startReadAhead prepares ReadAppend(from, maxBytes) unless it is being
// prepared already or the store's budget is spent, in place of the
// partition's oldest prepared read when all slots are taken.
func (p *Partition) startReadAhead(from int64, maxBytes int32) {
	s := p.store
	if maxBytes > aheadMaxBytes {
		return
	}
	p.aheadMu.Lock()
	defer p.aheadMu.Unlock()
	if slices.ContainsFunc(p.aheads, func(ra *readAhead) bool { return ra.from == from && ra.maxBytes == maxBytes }) {
		return
	}
	if len(p.aheads) == aheadSlots {
		go p.releaseAhead(p.aheads[0])
		p.aheads = slices.Delete(p.aheads, 0, 1)
	}
	if s.aheadBytes.Add(int64(maxBytes)) > aheadStoreBytes {
		s.aheadBytes.Add(-int64(maxBytes))
		return
	}
	ra := &readAhead{from: from, maxBytes: maxBytes, done: make(chan struct{}), buf: s.blockBuf()}
	s.aheadStarts.Add(1)
	p.aheads = append(p.aheads, ra)
	go func() {
		defer close(ra.done)
		var buf []byte
		buf, ra.batches, ra.metas, ra.err = p.readAppend(context.Background(), from, maxBytes, (*ra.buf)[:0])
		*ra.buf = buf
	}()
}

// takeAhead returns the prepared read for ReadAppend(from, maxBytes), if
// there is one, once it is finished; the caller releases it.
func (p *Partition) takeAhead(ctx context.Context, from int64, maxBytes int32) *readAhead {
	p.aheadMu.Lock()
	i := slices.IndexFunc(p.aheads, func(ra *readAhead) bool { return ra.from == from && ra.maxBytes == maxBytes })
	if i < 0 {
		p.aheadMu.Unlock()
		return nil
	}
	ra := p.aheads[i]
	p.aheads = slices.Delete(p.aheads, i, i+1)
	p.aheadMu.Unlock()
	select {
	case <-ra.done:
		return ra
	case <-ctx.Done():
		go p.releaseAhead(ra)
		return nil
	}
}

// releaseAhead waits for ra's read, wipes its plain bytes and returns its
// buffer and budget.
func (p *Partition) releaseAhead(ra *readAhead) {
	<-ra.done
	clear((*ra.buf)[:cap(*ra.buf)])
	p.store.putBlockBuf(ra.buf)
	p.store.aheadBytes.Add(-int64(ra.maxBytes))
}

// discardAhead drops what the partition has prepared.
func (p *Partition) discardAhead() {
	p.aheadMu.Lock()
	old := p.aheads
	p.aheads = nil
	p.aheadMu.Unlock()
	for _, ra := range old {
		go p.releaseAhead(ra)
	}
}

// fromAhead appends ra's batches to dst as readAppend would, if the
// partition still serves from; ok is false when it does not, and the
// caller reads instead (and meets the error, if any, itself).
func (p *Partition) fromAhead(ra *readAhead, from int64, dst []byte) (buf, batches []byte, metas []BatchMeta, ok bool) {
	if ra.err != nil || len(ra.metas) == 0 {
		return dst, nil, nil, false
	}
	p.mu.RLock()
	live := p.check("seglog.Read") == nil && from >= p.start
	p.mu.RUnlock()
	if !live {
		return dst, nil, nil, false
	}
	start := len(dst) + metaLen
	dst = slices.Grow(dst, metaLen+len(ra.batches))[:start+len(ra.batches)]
	copy(dst[start:], ra.batches)
	return dst, dst[start:], ra.metas, true
}

// aheadState is the read-ahead part of a Partition.
type aheadState struct {
	aheadMu sync.Mutex
	aheads  []*readAhead // oldest first, at most aheadSlots
	// starts are where the last reads started: a read from where another
	// started within repeatWindow is a reader fetching the same batches
	// over and over (a client that never commits, or a hostile one), which
	// never reads on from where it ended, so nothing is prepared for it.
	starts  [aheadSlots]readStart
	startAt int
}

type readStart struct {
	from int64
	at   time.Time
}

// repeatWindow is how recent a read from the same offset must be for a
// read to count as a repeat.
const repeatWindow = time.Second

// repeated records a read from from and says whether one started there
// within repeatWindow.
func (p *Partition) repeated(from int64) bool {
	now := time.Now()
	p.aheadMu.Lock()
	defer p.aheadMu.Unlock()
	repeat := slices.ContainsFunc(p.starts[:], func(s readStart) bool {
		return !s.at.IsZero() && s.from == from && now.Sub(s.at) < repeatWindow
	})
	p.starts[p.startAt] = readStart{from: from, at: now}
	p.startAt = (p.startAt + 1) % len(p.starts)
	return repeat
}
