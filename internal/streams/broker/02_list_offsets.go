package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	listLatest   = -1
	listEarliest = -2
)

// handleListOffsets answers the earliest (-2), latest (-1) or first offset at
// or after a timestamp. There are no transactions, so the last stable offset
// is the high watermark whatever the isolation level.
func (c *conn) handleListOffsets(ctx context.Context, r *kmsg.ListOffsetsRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.ListOffsetsResponse)
	allowed := c.access().Allows(Reader)
	for _, rt := range r.Topics {
		t := c.b.topics.byNameOrNil(rt.Topic)
		st := kmsg.NewListOffsetsResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewListOffsetsResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.Timestamp, sp.Offset = -1, -1
			p, kerrr := c.b.topics.partition(t, rp.Partition)
			switch {
			case !allowed:
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case kerrr != nil:
				sp.ErrorCode = kerrr.Code
			case rp.Timestamp == listLatest:
				sp.Offset = p.log.EndOffset()
			case rp.Timestamp == listEarliest:
				sp.Offset = p.log.StartOffset()
			case rp.Timestamp < 0:
				sp.ErrorCode = kerr.InvalidRequest.Code // -3 and the tiered-storage lookups
			default:
				c.offsetAtTime(ctx, p, rp.Timestamp, &sp)
			}
			if r.Version == 0 && sp.ErrorCode == 0 {
				sp.OldStyleOffsets = []int64{sp.Offset}
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}

func (c *conn) offsetAtTime(ctx context.Context, p *partition, ts int64, sp *kmsg.ListOffsetsResponseTopicPartition) {
	off := p.log.OffsetForTimestamp(ts)
	if off < 0 || off >= p.log.EndOffset() {
		return // no record that late: offset -1
	}
	sp.Offset, sp.Timestamp = off, ts
	if batches, err := p.log.Read(ctx, off, 1); err == nil && len(batches) > 0 {
		sp.Timestamp = max(batches[0].Meta.FirstTimestamp, min(ts, batches[0].Meta.MaxTimestamp))
	}
}
