package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleOffsetDelete deletes a group's committed offsets for partitions of
// topics its members are not subscribed to; deleting is for Managers.
func (c *conn) handleOffsetDelete(_ context.Context, r *kmsg.OffsetDeleteRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.OffsetDeleteResponse)
	if !c.may(GroupResource, r.Group, Manager) {
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp, nil
	}
	if ke := c.b.notCoordinator(); ke != nil {
		resp.ErrorCode = ke.Code
		return resp, nil
	}
	keys := map[string][]offsetKey{}
	for _, rt := range r.Topics {
		if t := c.b.topics.byNameOrNil(rt.Topic); t != nil {
			for _, rp := range rt.Partitions {
				keys[rt.Topic] = append(keys[rt.Topic], offsetKey{t.id, rp.Partition})
			}
		}
	}
	subscribed, ke := c.b.groups.deleteOffsets(r.Group, keys)
	if ke != nil {
		resp.ErrorCode = ke.Code
		return resp, nil
	}
	for _, rt := range r.Topics {
		st := kmsg.NewOffsetDeleteResponseTopic()
		st.Topic = rt.Topic
		t := c.b.topics.byNameOrNil(rt.Topic)
		for _, rp := range rt.Partitions {
			sp := kmsg.NewOffsetDeleteResponseTopicPartition()
			sp.Partition = rp.Partition
			switch {
			case t == nil:
				sp.ErrorCode = kerr.UnknownTopicOrPartition.Code
			case subscribed[rt.Topic]:
				sp.ErrorCode = kerr.GroupSubscribedToTopic.Code
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
