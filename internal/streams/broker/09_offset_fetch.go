package broker

import (
	"context"
	"slices"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleOffsetFetch returns committed offsets: one group before v8, several
// from v8, topics by id from v10. A partition without a commit gets -1.
func (c *conn) handleOffsetFetch(_ context.Context, r *kmsg.OffsetFetchRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.OffsetFetchResponse)
	if r.Version < 8 {
		topics := make([]kmsg.OffsetFetchRequestGroupTopic, len(r.Topics))
		for i, t := range r.Topics {
			topics[i] = kmsg.OffsetFetchRequestGroupTopic{Topic: t.Topic, Partitions: t.Partitions}
		}
		if r.Topics == nil {
			topics = nil
		}
		g := c.fetchGroupOffsets(r.Group, topics, false, r.RequireStable)
		resp.ErrorCode = g.ErrorCode
		if r.Version < 2 && g.ErrorCode != 0 { // no top-level error yet: each partition carries it, as Kafka answers
			for _, rt := range topics {
				gt := kmsg.NewOffsetFetchResponseGroupTopic()
				gt.Topic = rt.Topic
				for _, p := range rt.Partitions {
					gp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
					gp.Partition, gp.Offset, gp.LeaderEpoch, gp.ErrorCode = p, -1, -1, g.ErrorCode
					gt.Partitions = append(gt.Partitions, gp)
				}
				g.Topics = append(g.Topics, gt)
			}
		}
		for _, gt := range g.Topics {
			st := kmsg.NewOffsetFetchResponseTopic()
			st.Topic = gt.Topic
			for _, gp := range gt.Partitions {
				sp := kmsg.NewOffsetFetchResponseTopicPartition()
				sp.Partition, sp.Offset, sp.LeaderEpoch, sp.Metadata, sp.ErrorCode = gp.Partition, gp.Offset, gp.LeaderEpoch, gp.Metadata, gp.ErrorCode
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil
	}
	for _, rg := range r.Groups {
		resp.Groups = append(resp.Groups, c.fetchGroupOffsets(rg.Group, rg.Topics, r.Version >= 10, r.RequireStable))
	}
	return resp, nil
}

// With stable (KIP-447), an offset a transaction is about to commit is
// UNSTABLE_OFFSET_COMMIT, so that a new member waits for the transaction.
func (c *conn) fetchGroupOffsets(group string, topics []kmsg.OffsetFetchRequestGroupTopic, byID, stable bool) kmsg.OffsetFetchResponseGroup {
	out := kmsg.NewOffsetFetchResponseGroup()
	out.Group = group
	if !c.may(GroupResource, group, Reader) {
		out.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return out
	}
	if ke := c.b.notCoordinator(); ke != nil {
		out.ErrorCode = ke.Code
		return out
	}
	offsets := c.b.groups.committedOffsets(group)
	if topics == nil { // every committed offset of topics that still exist
		byTopic := map[uuid.UUID][]int32{}
		for k := range offsets {
			byTopic[k.topic] = append(byTopic[k.topic], k.partition)
		}
		for id, parts := range byTopic {
			if t := c.b.topics.byIDOrNil(id); t != nil && c.may(TopicResource, t.name, Reader) {
				slices.Sort(parts)
				topics = append(topics, kmsg.OffsetFetchRequestGroupTopic{Topic: t.name, TopicID: t.id, Partitions: parts})
			}
		}
		byID = false
	}
	for _, rt := range topics {
		t := c.b.topics.byNameOrNil(rt.Topic)
		if byID {
			t = c.b.topics.byIDOrNil(uuid.UUID(rt.TopicID))
		}
		allowed := c.mayTopic(t, rt.Topic, Reader)
		st := kmsg.NewOffsetFetchResponseGroupTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		for _, p := range rt.Partitions {
			sp := kmsg.NewOffsetFetchResponseGroupTopicPartition()
			sp.Partition, sp.Offset, sp.LeaderEpoch = p, -1, -1
			if !allowed {
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			} else if t != nil {
				if stable && c.b.txns.pendingOffset(group, t.id, p) {
					sp.ErrorCode = kerr.UnstableOffsetCommit.Code
				}
				if o, ok := offsets[offsetKey{t.id, p}]; ok {
					sp.Offset, sp.LeaderEpoch, sp.Metadata = o.Offset, o.LeaderEpoch, &o.Metadata
				}
			} else if byID {
				sp.ErrorCode = kerr.UnknownTopicID.Code
			}
			st.Partitions = append(st.Partitions, sp)
		}
		out.Topics = append(out.Topics, st)
	}
	return out
}
