package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleOffsetForLeaderEpoch answers where a leader epoch ends. A Keyline
// partition has one leader and one epoch, 0, for its whole life, so epoch 0
// ends at the log's end; a later epoch is unknown (-1, -1), and a client
// that believes in a later current epoch is told it is unknown.
func (c *conn) handleOffsetForLeaderEpoch(_ context.Context, r *kmsg.OffsetForLeaderEpochRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.OffsetForLeaderEpochResponse)
	for _, rt := range r.Topics {
		t := c.b.topics.byNameOrNil(rt.Topic)
		allowed := c.mayTopic(t, rt.Topic, Reader)
		st := kmsg.NewOffsetForLeaderEpochResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewOffsetForLeaderEpochResponseTopicPartition()
			sp.Partition, sp.LeaderEpoch, sp.EndOffset = rp.Partition, -1, -1
			p, kerrr := c.b.leaderPartition(t, rp.Partition)
			switch {
			case !allowed:
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case kerrr != nil:
				sp.ErrorCode = kerrr.Code
			case rp.CurrentLeaderEpoch > 0:
				sp.ErrorCode = kerr.UnknownLeaderEpoch.Code
			case rp.LeaderEpoch <= 0:
				sp.LeaderEpoch, sp.EndOffset = 0, p.log.EndOffset()
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
