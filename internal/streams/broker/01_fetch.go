package broker

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/semaphore"

	"github.com/keyline/keyline/internal/errs"
)

// largeReads are the turns large fetches take to read. Reading and
// decrypting batches is the broker's costliest work, and clients asking
// for everything over and over would otherwise keep every core on it (the
// Go scheduler runs their goroutines as often as anyone's), setting the
// latency of every other request in the process, Kafka's or HTTP's. A
// fetch that may read more than smallFetch (readEstimate) reads with turns
// of its own (one per goroutine it reads with) of half the process's
// cores, at least one; small fetches, a consumer's at the tail of a topic,
// read at once.
var largeReads = newReadTurns(max(runtime.GOMAXPROCS(0)/2, 1))

type readTurns struct {
	sem        *semaphore.Weighted
	n          int64
	busy, peak atomic.Int64 // turns taken, now and at most
}

func newReadTurns(n int) *readTurns {
	return &readTurns{sem: semaphore.NewWeighted(int64(n)), n: int64(n)}
}

// take waits for up to want turns (at least one) and returns how many it
// got; 0 when ctx ended first.
func (r *readTurns) take(ctx context.Context, want int) int {
	n := min(int64(max(want, 1)), r.n)
	if r.sem.Acquire(ctx, n) != nil {
		return 0
	}
	busy := r.busy.Add(n)
	for p := r.peak.Load(); busy > p && !r.peak.CompareAndSwap(p, busy); p = r.peak.Load() {
	}
	return int(n)
}

func (r *readTurns) give(n int) {
	r.busy.Add(-int64(n))
	r.sem.Release(int64(n))
}

// maxFetchBytes caps one fetch response whatever the client asks, as Kafka's
// fetch.max.bytes (55 MiB) does; at least one batch is always served.
const maxFetchBytes = 55 << 20

// handleFetch serves stored batches. When fewer than MinBytes are ready it
// waits up to MaxWaitMillis for any requested partition to change. Fetch
// sessions are not kept: SessionID 0 tells the client to send full requests.
func (c *conn) handleFetch(ctx context.Context, r *kmsg.FetchRequest) (kmsg.Response, error) {
	if resp := c.fetchThrottled(r); resp != nil {
		return resp, nil
	}
	deadline := time.Now().Add(time.Duration(r.MaxWaitMillis) * time.Millisecond)
	for {
		var changed []<-chan struct{}
		resp, size, failed := c.fetchOnce(ctx, r, deadline, &changed)
		if failed || size >= int(r.MinBytes) || len(changed) == 0 {
			return resp, nil
		}
		c.releaseArena() // what was read is not held while waiting
		wait := time.Until(deadline)
		if wait <= 0 || !waitAny(ctx, changed, wait) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// One last read: data may have come just as the wait ended.
			resp, _, _ = c.fetchOnce(ctx, r, deadline, nil)
			return resp, nil
		}
	}
}

// fetchOnce builds a response from what is stored now, collecting each
// partition's change signal first so no append between read and wait is
// missed. What it reads it first reserves from the fetch budgets, waiting
// for them until deadline at most.
func (c *conn) fetchOnce(ctx context.Context, r *kmsg.FetchRequest, deadline time.Time, changed *[]<-chan struct{}) (*kmsg.FetchResponse, int, bool) {
	resp := r.ResponseKind().(*kmsg.FetchResponse)
	c.releaseArena() // a response built before is dropped
	budget := int64(maxFetchBytes)
	if r.Version >= 3 && r.MaxBytes > 0 {
		budget = min(budget, int64(r.MaxBytes))
	}
	// First every partition's answer without data, and what to read.
	var reads []read
	var wanted int64
	for ti, rt := range r.Topics {
		t := c.b.topics.byNameOrNil(rt.Topic)
		missing := kerr.UnknownTopicOrPartition
		if r.Version >= 13 {
			t, missing = c.b.topics.byIDOrNil(uuid.UUID(rt.TopicID)), kerr.UnknownTopicID
		}
		allowed := c.mayTopic(t, rt.Topic, Reader)
		st := kmsg.NewFetchResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for pi, rp := range rt.Partitions {
			sp := kmsg.NewFetchResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = -1, -1, -1
			sp.RecordBatches = []byte{} // librdkafka refuses a null record set
			var p *partition
			switch {
			case !allowed:
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case t == nil:
				sp.ErrorCode = missing.Code
			default:
				var kerrr *kerr.Error
				if p, kerrr = c.b.leaderPartition(t, rp.Partition); kerrr != nil {
					sp.ErrorCode = kerrr.Code
				}
			}
			if p != nil {
				if changed != nil {
					*changed = append(*changed, p.log.Changed())
				}
				reads = append(reads, read{topic: ti, part: pi, t: t, p: p, offset: rp.FetchOffset, max: int64(rp.PartitionMaxBytes)})
				wanted += max(int64(rp.PartitionMaxBytes), 0)
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	if budget = c.fetchQuotaBytes(budget, func() int64 { return readEstimate(reads) }, resp); budget == 0 {
		return resp, 0, true // over its quota: answered without data, throttled
	}
	sp := func(rd read) *kmsg.FetchResponseTopicPartition { return &resp.Topics[rd.topic].Partitions[rd.part] }
	logErr := func(rd read, err error) {
		if err != nil {
			c.log.Error("reading a partition failed", "topic_id", rd.t.id.String(), "partition", rd.p.index, "err", err)
		}
	}
	// Only the partition whose first batch the budgets were reserved for
	// may exceed its limit with it.
	budget, oversize, over := c.reserveFetch(ctx, deadline, r, reads, budget, wanted)
	size := 0
	workers := min(len(reads), runtime.GOMAXPROCS(0))
	if budget > 0 && min(readEstimate(reads), budget) > smallFetch {
		if workers = largeReads.take(ctx, workers); workers == 0 {
			return resp, 0, true // the connection is closing
		}
		defer largeReads.give(workers)
	}
	if len(reads) > 1 && wanted+over <= budget && workers > 1 {
		// Every partition gets its full PartitionMaxBytes, so they can be
		// read (and decrypted) at once, each into an arena of its own.
		// Only the first partition with data may exceed its limit with one
		// oversized batch (KIP-74); should an earlier one have had data
		// meanwhile, that batch is dropped afterwards and fetched by the
		// client's next request.
		ns := make([]int, len(reads))
		arenas := make([]*[]byte, len(reads))
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < len(reads); i = int(next.Add(1) - 1) {
					rd := reads[i]
					arenas[i] = c.b.getBuf()
					var err error
					*arenas[i], ns[i], err = c.readPartition(ctx, rd, r.IsolationLevel == 1, rd.max, i == oversize, sp(rd), (*arenas[i])[:0])
					logErr(rd, err)
				}
			})
		}
		wg.Wait()
		c.readArenas = append(c.readArenas, arenas...)
		for i, rd := range reads {
			if ns[i] > int(rd.max) && size > 0 {
				sp(rd).RecordBatches, ns[i] = []byte{}, 0
			}
			size += ns[i]
		}
	} else {
		for i, rd := range reads {
			limit := min(rd.max, budget-int64(size))
			var n int
			var err error
			c.arena, n, err = c.readPartition(ctx, rd, r.IsolationLevel == 1, limit, size == 0 && i == oversize, sp(rd), c.fetchArena())
			logErr(rd, err)
			size += n
		}
	}
	c.holdArenas()
	failed := false
	for _, st := range resp.Topics {
		for _, p := range st.Partitions {
			failed = failed || p.ErrorCode != 0
		}
	}
	return resp, size, failed
}

// readEstimate is about as many bytes as reads may return, or more: for
// each partition its first batch's size times the records behind it (a
// batch holds one or more), within its limit.
func readEstimate(reads []read) int64 {
	var n int64
	for _, rd := range reads {
		first := int64(rd.p.log.FirstBatchSize(rd.offset))
		behind := rd.p.log.EndOffset() - rd.offset
		if first == 0 || behind <= 0 {
			continue
		}
		most := max(rd.max, first)
		if behind <= most/first {
			most = first * behind
		}
		n += most
	}
	return n
}

// read is a partition a fetch reads, and where its answer goes.
type read struct {
	topic, part int
	t           *topic
	p           *partition
	offset, max int64
}

// reserveFetch reserves from the fetch budgets what reads need, waiting for
// them until deadline at most, and returns how many bytes of batches they
// may return (0: none), which read may return one batch over its limit
// (KIP-74), and by how much. That read is the first with data: the
// reservation always covers its first batch, or when that is larger than
// the budgets, is all of them, so that a consumer alone makes progress.
func (c *conn) reserveFetch(ctx context.Context, deadline time.Time, r *kmsg.FetchRequest, reads []read, budget, wanted int64) (int64, int, int64) {
	oversize, first := -1, int64(0)
	for i, rd := range reads {
		if n := rd.p.log.FirstBatchSize(rd.offset); n > 0 {
			oversize, first = i, int64(n)
			break
		}
	}
	if oversize < 0 {
		return 0, -1, 0
	}
	over := max(first-reads[oversize].max, 0)
	data := max(min(budget, wanted+over), first)
	// The batches are held twice: read (with their sealed blocks) and
	// then encoded (with the arena they were read into). The rest of the
	// response is small.
	overhead := int64(4<<10 + 512*len(r.Topics))
	for _, t := range r.Topics {
		overhead += 512 * int64(len(t.Partitions))
	}
	need := func(d int64) int64 { return 2*d + overhead }
	wait, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	got, lane := c.b.fetchMem.reserve(wait, need(data), need(first))
	if got == 0 {
		return 0, -1, 0
	}
	c.mem.fetchReserved, c.mem.fetchLane = got, lane
	return min(budget, max((got-overhead)/2, 0)), oversize, over
}

// holdArenas records what the response's arenas hold.
func (c *conn) holdArenas() {
	n := int64(len(c.arena))
	for _, a := range c.readArenas {
		if a != nil {
			n += int64(len(*a))
		}
	}
	c.b.fetchMem.hold(n - c.mem.fetchHeld)
	c.mem.fetchHeld = n
}

// holdResponse moves n bytes, a fetch response encoded from the arenas,
// from the fetch's reservation to its answer, which holds them until it is
// written.
func (c *conn) holdResponse(n int) heldResponse {
	if c.mem.fetchReserved == 0 {
		return heldResponse{}
	}
	h := heldResponse{reserved: min(int64(n), c.mem.fetchReserved), held: int64(n), lane: c.mem.fetchLane}
	c.mem.fetchReserved -= h.reserved
	c.b.fetchMem.hold(h.held)
	return h
}

// releaseFetchMemory gives back what the response being built holds of the
// fetch budgets.
func (c *conn) releaseFetchMemory() {
	c.b.fetchMem.hold(-c.mem.fetchHeld)
	c.b.fetchMem.give(c.mem.fetchReserved, c.mem.fetchLane)
	c.mem.fetchHeld, c.mem.fetchReserved, c.mem.fetchLane = 0, 0, false
}

// readPartition fills sp from rd's offset, reading the batches into arena,
// and returns arena grown. An oversized first batch is served only when
// first says nothing else is in the response yet, so a client always makes
// progress and the response stays within MaxBytes otherwise. A committed
// (read_committed) read stops at the last stable offset and names the
// aborted transactions among what it returns.
func (c *conn) readPartition(ctx context.Context, rd read, committed bool, limit int64, first bool, sp *kmsg.FetchResponseTopicPartition, arena []byte) ([]byte, int, error) {
	p, offset := rd.p, rd.offset
	start, end := p.log.StartOffset(), p.log.EndOffset()
	stable := c.b.txns.stableOffset(rd.t.id, p.index, end)
	sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = end, stable, start
	if offset < start || offset > end {
		sp.ErrorCode = kerr.OffsetOutOfRange.Code
		return arena, 0, nil
	}
	upto := end
	if committed {
		upto = stable
	}
	// A read always returns its first batch: one over the limit is not
	// read at all unless it may be served.
	if offset >= upto || (!first && (limit <= 0 || int64(p.log.FirstBatchSize(offset)) > limit)) {
		return arena, 0, nil
	}
	arena, data, metas, err := p.log.ReadAppend(ctx, offset, int32(max(limit, 1)), arena)
	if errs.Is(errs.Invalid, err) { // retention moved the start between the check and the read
		sp.ErrorCode = kerr.OffsetOutOfRange.Code
		return arena, 0, nil
	}
	if err != nil {
		sp.ErrorCode = kerr.KafkaStorageError.Code
		return arena, 0, err
	}
	size, last := 0, int64(-1)
	for i, m := range metas {
		if m.BaseOffset >= upto || (int64(size)+int64(m.Size) > limit && !(i == 0 && first)) {
			break
		}
		stampBatch(data[size:], m.BaseOffset)
		size += int(m.Size)
		last = m.LastOffset()
	}
	if committed && size > 0 {
		sp.AbortedTransactions = c.b.txns.abortedIn(rd.t.id, p.index, offset, last)
	}
	// The batches stay in the arena until the response is written; the
	// next partition's go after them.
	if size > 0 {
		sp.RecordBatches = data[:size:size]
	}
	return arena, size, nil
}

// waitAny waits until one of chans is closed (true), d passes or ctx ends.
func waitAny(ctx context.Context, chans []<-chan struct{}, d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	if len(chans) == 1 {
		select {
		case <-chans[0]:
			return true
		case <-timer.C:
		case <-ctx.Done():
		}
		return false
	}
	woke := make(chan struct{}, 1)
	stop := make(chan struct{})
	defer close(stop)
	for _, ch := range chans {
		go func() {
			select {
			case <-ch:
				select {
				case woke <- struct{}{}:
				default:
				}
			case <-stop:
			}
		}()
	}
	select {
	case <-woke:
		return true
	case <-timer.C:
	case <-ctx.Done():
	}
	return false
}
