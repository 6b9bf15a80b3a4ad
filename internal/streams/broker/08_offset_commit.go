package broker

import (
	"context"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleOffsetCommit stores a group's offsets durably (v10 names topics by id).
func (c *conn) handleOffsetCommit(_ context.Context, r *kmsg.OffsetCommitRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.OffsetCommitResponse)
	offsets := map[offsetKey]committed{}
	codes := make([][]int16, len(r.Topics))
	allowed := c.may(GroupResource, r.Group, Reader)
	for i, rt := range r.Topics {
		t := c.b.topics.byNameOrNil(rt.Topic)
		missing := kerr.UnknownTopicOrPartition
		if r.Version >= 10 {
			t, missing = c.b.topics.byIDOrNil(uuid.UUID(rt.TopicID)), kerr.UnknownTopicID
		}
		topicAllowed := c.mayTopic(t, rt.Topic, Reader)
		codes[i] = make([]int16, len(rt.Partitions))
		for j, rp := range rt.Partitions {
			_, kerrr := c.b.topics.partition(t, rp.Partition)
			switch {
			case !allowed:
				codes[i][j] = kerr.GroupAuthorizationFailed.Code
			case !topicAllowed:
				codes[i][j] = kerr.TopicAuthorizationFailed.Code
			case t == nil:
				codes[i][j] = missing.Code
			case kerrr != nil:
				codes[i][j] = kerrr.Code
			default:
				meta := ""
				if rp.Metadata != nil {
					meta = *rp.Metadata
				}
				offsets[offsetKey{t.id, rp.Partition}] = committed{Offset: rp.Offset, LeaderEpoch: rp.LeaderEpoch, Metadata: meta}
			}
		}
	}
	var groupErr *kerr.Error
	if len(offsets) > 0 {
		generation := r.Generation
		if r.Version == 0 {
			generation = -1
		}
		if groupErr = c.b.notCoordinator(); groupErr == nil {
			groupErr = c.b.groups.commit(r.Group, generation, r.MemberID, offsets)
		}
	}
	for i, rt := range r.Topics {
		st := kmsg.NewOffsetCommitResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for j, rp := range rt.Partitions {
			sp := kmsg.NewOffsetCommitResponseTopicPartition()
			sp.Partition, sp.ErrorCode = rp.Partition, codes[i][j]
			if sp.ErrorCode == 0 && groupErr != nil {
				sp.ErrorCode = groupErr.Code
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
