package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDeleteRecords moves partitions' start offsets forward; offset -1
// means the high watermark. It is how consumers skip data that can no longer
// be read.
func (c *conn) handleDeleteRecords(_ context.Context, r *kmsg.DeleteRecordsRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.DeleteRecordsResponse)
	for _, rt := range r.Topics {
		t := c.b.topics.byNameOrNil(rt.Topic)
		st := kmsg.NewDeleteRecordsResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewDeleteRecordsResponseTopicPartition()
			sp.Partition, sp.LowWatermark = rp.Partition, -1
			p, kerrr := c.b.leaderPartition(t, rp.Partition)
			switch {
			case !c.mayTopic(t, rt.Topic, Manager):
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case kerrr != nil:
				sp.ErrorCode = kerrr.Code
			default:
				offset, end := rp.Offset, p.log.EndOffset()
				if offset == -1 {
					offset = end
				}
				if offset < 0 || offset > end {
					sp.ErrorCode = kerr.OffsetOutOfRange.Code
					break
				}
				if err := p.log.DeleteBefore(offset); err != nil {
					c.log.Error("deleting records failed", "topic_id", t.id.String(), "partition", p.index, "err", err)
					sp.ErrorCode = kerr.KafkaStorageError.Code
					break
				}
				sp.LowWatermark = p.log.StartOffset()
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
