package broker

import (
	"context"
	"encoding/binary"
	"io"
	"slices"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
)

// Memory budgets. Fetch responses and large request frames (produce
// requests, mostly) are held in memory while they are built, read or
// handled, on every connection at once. Each kind takes its bytes from the
// deployment's budget and, when the process shares one among its
// deployments, from that one too, always in that order, so no two holders
// wait for each other. The budgets are weighted semaphores: whoever waits
// is served first come, first served, and a large request cannot be passed
// over for ever by smaller ones.
//
// Small fetches do not queue behind large ones, though: a fetch whose
// first batch needs at most smallFetch bytes and finds a budget spent
// takes them from the budget's lane, a sixteenth of its size more that
// only such fetches use. Otherwise a consumer at the tail of a topic,
// reading a batch or two, would wait behind every client asking for
// everything (a few 2 GiB fetches keep the budget spent and the queue
// full), its latency set by theirs.

// MemoryBudget is memory that requests of several connections share: one
// broker's, or every broker's of a process.
type MemoryBudget struct {
	size int64
	sem  *semaphore.Weighted
	lane *semaphore.Weighted // size/laneShare more, for small fetches
	// inUse is what the holders actually hold (which stays within what
	// they reserved, but for one batch larger than the whole budget);
	// peak is its high-water mark.
	inUse, peak atomic.Int64
}

// NewMemoryBudget is a budget of size bytes (at least 1).
func NewMemoryBudget(size int64) *MemoryBudget {
	size = max(size, 1)
	return &MemoryBudget{size: size, sem: semaphore.NewWeighted(size), lane: semaphore.NewWeighted(max(size/laneShare, 1))}
}

// laneShare is the part of a budget that its lane adds for small fetches,
// and smallFetch the most such a fetch takes from it: the lane serves at
// least laneShare fetches at once whatever the budget's size.
const (
	laneShare  = 16
	smallFetch = 64 << 10
)

// MemoryUse is a budget's size, the bytes held of it now and the most held
// at once.
type MemoryUse struct {
	Size, InUse, Peak int64
}

// Use reports the budget's use.
func (m *MemoryBudget) Use() MemoryUse {
	return MemoryUse{Size: m.size, InUse: m.inUse.Load(), Peak: m.peak.Load()}
}

func (m *MemoryBudget) hold(delta int64) {
	n := m.inUse.Add(delta)
	for p := m.peak.Load(); n > p && !m.peak.CompareAndSwap(p, n); p = m.peak.Load() {
	}
}

// budgets are the budgets a request takes from, the deployment's first.
type budgets []*MemoryBudget

func newBudgets(own int64, shared *MemoryBudget) budgets {
	if shared == nil {
		return budgets{NewMemoryBudget(own)}
	}
	return budgets{NewMemoryBudget(own), shared}
}

// size is the most that can be reserved at once.
func (bs budgets) size() int64 {
	n := bs[0].size
	for _, b := range bs[1:] {
		n = min(n, b.size)
	}
	return n
}

func (bs budgets) tryAcquire(n int64) bool { return bs.try(n, mainOf) }

func (bs budgets) release(n int64) { bs.put(n, mainOf) }

// mainOf and laneOf pick a budget's semaphore: the budget proper or its
// lane for small fetches.
func mainOf(b *MemoryBudget) *semaphore.Weighted { return b.sem }
func laneOf(b *MemoryBudget) *semaphore.Weighted { return b.lane }

// try takes n bytes from every budget's semaphore picked by of, or none.
func (bs budgets) try(n int64, of func(*MemoryBudget) *semaphore.Weighted) bool {
	for i, b := range bs {
		if !of(b).TryAcquire(n) {
			bs[:i].put(n, of)
			return false
		}
	}
	return true
}

func (bs budgets) put(n int64, of func(*MemoryBudget) *semaphore.Weighted) {
	if n == 0 {
		return
	}
	for _, b := range bs {
		of(b).Release(n)
	}
}

// acquire waits until n bytes are free in every budget or ctx ends.
func (bs budgets) acquire(ctx context.Context, n int64) error {
	for i, b := range bs {
		if err := b.sem.Acquire(ctx, n); err != nil {
			bs[:i].release(n)
			return err
		}
	}
	return nil
}

// give returns n bytes reserved, to the lanes if they came from them.
func (bs budgets) give(n int64, lane bool) {
	if lane {
		bs.put(n, laneOf)
	} else {
		bs.put(n, mainOf)
	}
}

// hold records bytes taken (or, negative, given back) by a holder.
func (bs budgets) hold(delta int64) {
	if delta == 0 {
		return
	}
	for _, b := range bs {
		b.hold(delta)
	}
}

// reserve takes up to want bytes but no fewer than least (both capped at
// the budgets' size): as much as is free now, halving what it asks for,
// else, waiting its turn until ctx ends, a share of the budgets that is
// at least least; 0 when ctx ended first. Waiting for a share rather than
// the least lets a busy budget serve fewer, larger responses. A small
// fetch (least up to smallFetch) that finds the budgets spent takes up to
// smallFetch from their lanes instead when they have it (lane is true).
func (bs budgets) reserve(ctx context.Context, want, least int64) (n int64, lane bool) {
	size := bs.size()
	want = min(want, size)
	least = max(min(least, want), 1)
	for n := want; n > least; n /= 2 {
		if bs.tryAcquire(n) {
			return n, false
		}
	}
	if bs.tryAcquire(least) {
		return least, false
	}
	if least <= smallFetch {
		for _, n := range []int64{min(want, smallFetch), least} {
			if bs.try(n, laneOf) {
				return n, true
			}
		}
	}
	share := max(least, min(want, size/waitShares))
	if ctx.Err() != nil || bs.acquire(ctx, share) != nil {
		return 0, false
	}
	return share, false
}

// waitShares is how many shares of a budget waiting requests take.
const waitShares = 8

// smallFrame is the size up to which a request frame is read without
// taking from the request budgets: a connection reads one request at a
// time, and MaxConnections bounds how many connections there are.
const smallFrame = 64 << 10

// connMemory is what a connection holds of its broker's budgets for the
// request being handled.
type connMemory struct {
	fetchReserved int64 // of the fetch budgets, for the response being built
	fetchLane     bool  // fetchReserved is of their lanes
	fetchHeld     int64 // bytes in its arenas
	frame         int64 // of the request budgets, for the frame being handled
	frameBuf      *[]byte
}

// heldResponse is what an encoded fetch response holds of the fetch
// budgets until it is written.
type heldResponse struct {
	reserved, held int64
	lane           bool // reserved is of the lanes
}

func (h heldResponse) release(bs budgets) {
	bs.hold(-h.held)
	bs.give(h.reserved, h.lane)
}

// readRequest reads the next request frame. A large frame on a logged-in
// connection first takes its size from the request budgets, waiting (while
// the connection stays open, and no longer than IdleTimeout) until it is
// free; a produce request's is read into a pooled buffer. releaseFrame
// gives both back once the request is handled, which readRequest does for
// the one before.
func (c *conn) readRequest(max int32) ([]byte, error) {
	c.releaseFrame()
	n, err := readFrameSize(c.nc, max)
	if err != nil {
		return nil, err
	}
	if !c.authed || n <= smallFrame {
		return readFrameBody(c.nc, n, &c.rbuf)
	}
	bs := c.b.requestMem
	if int64(n) > bs.size() {
		return nil, badFrame("frame of %d bytes is over the %d bytes that requests may hold at once", n, bs.size())
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.b.cfg.IdleTimeout)
	defer cancel()
	if err := bs.acquire(ctx, int64(n)); err != nil {
		if c.ctx.Err() != nil {
			return nil, err
		}
		return nil, badFrame("no memory for a request of %d bytes came free in %v", n, c.b.cfg.IdleTimeout)
	}
	c.mem.frame = int64(n)
	bs.hold(int64(n))
	// Only a produce request's frame goes back to the pool after it is
	// handled; any other may be kept by its handler (see readFrameInto).
	var key [2]byte
	if _, err := io.ReadFull(c.nc, key[:]); err != nil {
		return nil, err
	}
	var body []byte
	if int16(binary.BigEndian.Uint16(key[:])) == produceKey {
		c.mem.frameBuf = c.b.getBuf()
		body = slices.Grow((*c.mem.frameBuf)[:0], int(n))[:n]
		*c.mem.frameBuf = body
	} else {
		body = make([]byte, n)
	}
	copy(body, key[:])
	if _, err := io.ReadFull(c.nc, body[len(key):]); err != nil {
		return nil, err
	}
	return body, nil
}

// releaseFrame gives back what the last frame read holds.
func (c *conn) releaseFrame() {
	if c.mem.frameBuf != nil {
		c.b.putBuf(c.mem.frameBuf)
		c.mem.frameBuf = nil
	}
	if c.mem.frame > 0 {
		c.b.requestMem.hold(-c.mem.frame)
		c.b.requestMem.release(c.mem.frame)
		c.mem.frame = 0
	}
}

// releaseMemory gives back all that the connection holds of its broker's
// budgets, when it ends.
func (c *conn) releaseMemory() {
	c.releaseFrame()
	c.releaseArena()
}
