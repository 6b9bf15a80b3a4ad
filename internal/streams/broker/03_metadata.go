package broker

import (
	"context"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleMetadata describes the deployment's brokers and the topics asked
// for, or all of them. One node, the leader, leads every partition and is
// the controller; while none is known the controller is -1 and partitions
// are LEADER_NOT_AVAILABLE, so clients ask again.
func (c *conn) handleMetadata(ctx context.Context, r *kmsg.MetadataRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.MetadataResponse)
	for _, a := range c.b.brokers() {
		resp.Brokers = append(resp.Brokers, kmsg.MetadataResponseBroker{NodeID: a.NodeID, Host: a.Host, Port: a.Port})
	}
	resp.ClusterID = &c.b.cfg.ClusterID
	resp.ControllerID = c.b.leaderID()
	if !c.may(ClusterResource, "", Reader) {
		return resp, nil
	}
	// v0: an empty list means all topics; v1+: null means all.
	if r.Topics == nil || (r.Version == 0 && len(r.Topics) == 0) {
		for _, t := range c.b.topics.list() {
			if !c.may(TopicResource, t.name, Reader) { // as Kafka, unauthorized topics are left out
				continue
			}
			resp.Topics = append(resp.Topics, c.describeTopic(t, t.name))
		}
		return resp, nil
	}
	for _, rt := range r.Topics {
		var t *topic
		name := ""
		if rt.Topic != nil {
			name = *rt.Topic
			t = c.b.topics.byNameOrNil(name)
			if t == nil && c.b.cfg.AutoCreateTopics && !c.b.follows() && (r.Version < 4 || r.AllowAutoTopicCreation) && c.may(TopicResource, name, Writer) {
				t, _ = c.b.topics.create(name, 1, c.b.cfg.MaxPartitions, nil)
			}
		} else if t = c.b.topics.byIDOrNil(uuid.UUID(rt.TopicID)); t != nil {
			name = t.name
		}
		if (t != nil || rt.Topic != nil) && !c.mayTopic(t, name, Reader) {
			st := kmsg.NewMetadataResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			st.ErrorCode = kerr.TopicAuthorizationFailed.Code
			resp.Topics = append(resp.Topics, st)
			continue
		}
		if t == nil {
			st := kmsg.NewMetadataResponseTopic()
			st.Topic, st.TopicID = rt.Topic, rt.TopicID
			st.ErrorCode = kerr.UnknownTopicOrPartition.Code
			if rt.Topic == nil {
				st.ErrorCode = kerr.UnknownTopicID.Code
			} else if validTopicName(name) != nil {
				st.ErrorCode = kerr.InvalidTopicException.Code
			}
			resp.Topics = append(resp.Topics, st)
			continue
		}
		resp.Topics = append(resp.Topics, c.describeTopic(t, name))
	}
	return resp, nil
}

func (c *conn) describeTopic(t *topic, name string) kmsg.MetadataResponseTopic {
	leader := c.b.leaderID()
	st := kmsg.NewMetadataResponseTopic()
	st.Topic, st.TopicID = &name, t.id
	for _, p := range c.b.topics.partitions(t) {
		sp := kmsg.NewMetadataResponseTopicPartition()
		sp.Partition, sp.Leader, sp.LeaderEpoch = p.index, leader, 0
		if leader == noLeader {
			sp.ErrorCode = kerr.LeaderNotAvailable.Code
			sp.Replicas, sp.ISR = []int32{}, []int32{}
		} else {
			sp.Replicas, sp.ISR = []int32{leader}, []int32{leader}
		}
		st.Partitions = append(st.Partitions, sp)
	}
	return st
}
