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

	"github.com/keyline/keyline/internal/errs"
)

// maxFetchBytes caps one fetch response whatever the client asks, as Kafka's
// fetch.max.bytes (55 MiB) does; at least one batch is always served.
const maxFetchBytes = 55 << 20

// handleFetch serves stored batches. When fewer than MinBytes are ready it
// waits up to MaxWaitMillis for any requested partition to change. Fetch
// sessions are not kept: SessionID 0 tells the client to send full requests.
func (c *conn) handleFetch(ctx context.Context, r *kmsg.FetchRequest) (kmsg.Response, error) {
	deadline := time.Now().Add(time.Duration(r.MaxWaitMillis) * time.Millisecond)
	for {
		var changed []<-chan struct{}
		resp, size, failed := c.fetchOnce(ctx, r, &changed)
		if failed || size >= int(r.MinBytes) || len(changed) == 0 {
			return resp, nil
		}
		wait := time.Until(deadline)
		if wait <= 0 || !waitAny(ctx, changed, wait) {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			// One last read: data may have come just as the wait ended.
			resp, _, _ = c.fetchOnce(ctx, r, nil)
			return resp, nil
		}
	}
}

// fetchOnce builds a response from what is stored now, collecting each
// partition's change signal first so no append between read and wait is
// missed.
func (c *conn) fetchOnce(ctx context.Context, r *kmsg.FetchRequest, changed *[]<-chan struct{}) (*kmsg.FetchResponse, int, bool) {
	resp := r.ResponseKind().(*kmsg.FetchResponse)
	c.releaseReadArenas()
	c.arena = c.arena[:0] // a response built before is dropped
	budget := int64(maxFetchBytes)
	if r.Version >= 3 && r.MaxBytes > 0 {
		budget = min(budget, int64(r.MaxBytes))
	}
	allowed := c.access().Allows(Reader)
	// First every partition's answer without data, and what to read.
	type read struct {
		topic, part int
		t           *topic
		p           *partition
		offset, max int64
	}
	var reads []read
	var wanted int64
	for ti, rt := range r.Topics {
		t := c.b.topics.byNameOrNil(rt.Topic)
		missing := kerr.UnknownTopicOrPartition
		if r.Version >= 13 {
			t, missing = c.b.topics.byIDOrNil(uuid.UUID(rt.TopicID)), kerr.UnknownTopicID
		}
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
				if p, kerrr = c.b.topics.partition(t, rp.Partition); kerrr != nil {
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
	sp := func(rd read) *kmsg.FetchResponseTopicPartition { return &resp.Topics[rd.topic].Partitions[rd.part] }
	logErr := func(rd read, err error) {
		if err != nil {
			c.log.Error("reading a partition failed", "topic_id", rd.t.id.String(), "partition", rd.p.index, "err", err)
		}
	}
	size := 0
	if len(reads) > 1 && wanted <= budget && runtime.GOMAXPROCS(0) > 1 {
		// Every partition gets its full PartitionMaxBytes, so they can be
		// read (and decrypted) at once, each into an arena of its own.
		// Only the first partition with data may exceed its limit with one
		// oversized batch (KIP-74); a later one's is dropped afterwards and
		// fetched by the client's next request.
		ns := make([]int, len(reads))
		arenas := make([]*[]byte, len(reads))
		var next atomic.Int64
		var wg sync.WaitGroup
		for range min(len(reads), runtime.GOMAXPROCS(0)) {
			wg.Go(func() {
				for i := int(next.Add(1) - 1); i < len(reads); i = int(next.Add(1) - 1) {
					rd := reads[i]
					arenas[i] = c.b.getBuf()
					var err error
					*arenas[i], ns[i], err = c.readPartition(ctx, rd.p, rd.offset, rd.max, true, sp(rd), (*arenas[i])[:0])
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
		for _, rd := range reads {
			limit := min(rd.max, budget-int64(size))
			var n int
			var err error
			c.arena, n, err = c.readPartition(ctx, rd.p, rd.offset, limit, size == 0, sp(rd), c.fetchArena())
			logErr(rd, err)
			size += n
		}
	}
	failed := false
	for _, st := range resp.Topics {
		for _, p := range st.Partitions {
			failed = failed || p.ErrorCode != 0
		}
	}
	return resp, size, failed
}

// readPartition fills sp from offset, reading the batches into arena, and
// returns arena grown. An oversized first batch is served only when first
// says nothing else is in the response yet, so a client always makes
// progress and the response stays within MaxBytes otherwise.
func (c *conn) readPartition(ctx context.Context, p *partition, offset, limit int64, first bool, sp *kmsg.FetchResponseTopicPartition, arena []byte) ([]byte, int, error) {
	start, end := p.log.StartOffset(), p.log.EndOffset()
	sp.HighWatermark, sp.LastStableOffset, sp.LogStartOffset = end, end, start
	if offset < start || offset > end {
		sp.ErrorCode = kerr.OffsetOutOfRange.Code
		return arena, 0, nil
	}
	if offset == end || (limit <= 0 && !first) {
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
	size := 0
	for i, m := range metas {
		if int64(size)+int64(m.Size) > limit && !(i == 0 && first) {
			break
		}
		stampBatch(data[size:], m.BaseOffset)
		size += int(m.Size)
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
