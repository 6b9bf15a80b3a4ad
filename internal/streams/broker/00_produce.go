package broker

import (
	"context"
	"sync"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// maxParallelAppends bounds the goroutines one produce request may use.
const maxParallelAppends = 32

// handleProduce validates and appends one batch per partition. With acks=0
// nothing is answered; otherwise the answer is written once the log has the
// data on disk (when the store syncs): the waits go to c.durable, and the
// connection reads the next request meanwhile, so that pipelined produce
// requests share fsyncs. Partitions are appended concurrently.
func (c *conn) handleProduce(ctx context.Context, r *kmsg.ProduceRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.ProduceResponse)
	badAcks := r.Acks != 0 && r.Acks != 1 && r.Acks != -1
	var wg sync.WaitGroup
	var mu sync.Mutex
	slots := make(chan struct{}, maxParallelAppends)
	for _, rt := range r.Topics {
		t := c.b.topics.byNameOrNil(rt.Topic)
		if r.Version >= 13 {
			t = c.b.topics.byIDOrNil(uuid.UUID(rt.TopicID))
		}
		allowed := c.mayTopic(t, rt.Topic, Writer)
		st := kmsg.NewProduceResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		st.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(rt.Partitions))
		for i, rp := range rt.Partitions {
			sp := &st.Partitions[i]
			sp.Default()
			sp.Partition = rp.Partition
			sp.BaseOffset, sp.LogAppendTime, sp.LogStartOffset = -1, -1, -1
			switch {
			case !allowed:
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case badAcks:
				sp.ErrorCode = kerr.InvalidRequiredAcks.Code
			default:
				slots <- struct{}{}
				wg.Go(func() {
					defer func() { <-slots }()
					if durable := c.produceTo(ctx, t, rp, sp, r.Version >= 13); durable != nil {
						mu.Lock()
						c.durable = append(c.durable, durable)
						mu.Unlock()
					}
				})
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	wg.Wait()
	if r.Acks == 0 {
		return nil, nil
	}
	return resp, nil
}

// produceTo appends one partition's batch and returns what to wait on
// before the answer goes out.
func (c *conn) produceTo(ctx context.Context, t *topic, rp kmsg.ProduceRequestTopicPartition, sp *kmsg.ProduceResponseTopicPartition, byID bool) func() error {
	p, kerrr := c.b.leaderPartition(t, rp.Partition)
	if kerrr != nil {
		if byID && t == nil {
			kerrr = kerr.UnknownTopicID
		}
		sp.ErrorCode = kerrr.Code
		return nil
	}
	meta, kerrr, why := parseBatch(rp.Records)
	appendTime := int64(-1)
	if kerrr == nil {
		appendTime, kerrr, why = c.b.admitBatch(t, rp.Records, &meta)
	}
	if kerrr != nil {
		sp.ErrorCode, sp.ErrorMessage = kerrr.Code, &why
		return nil
	}
	if transactional(rp.Records) {
		release, kerrr := c.b.txns.admitProduce(meta, t.id, p.index)
		if kerrr != nil {
			sp.ErrorCode = kerrr.Code
			return nil
		}
		defer release()
	}
	base, durable, kerrr, err := p.append(ctx, meta, rp.Records)
	if err != nil {
		c.log.Error("appending to a partition failed", "topic_id", t.id.String(), "partition", p.index, "err", err)
	}
	if kerrr != nil {
		sp.ErrorCode = kerrr.Code
		return nil
	}
	sp.BaseOffset, sp.LogAppendTime = base, appendTime
	sp.LogStartOffset = p.log.StartOffset()
	return durable
}
