package broker

import (
	"context"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleCreateTopics creates topics on this single broker. A replication
// factor of 3 (what Event Streams uses and its applications ask for) or 1
// is accepted, and the topic has one replica: the response, Metadata and
// DescribeTopics say so.
func (c *conn) handleCreateTopics(ctx context.Context, r *kmsg.CreateTopicsRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.CreateTopicsResponse)
	for _, rt := range r.Topics {
		st := kmsg.NewCreateTopicsResponseTopic()
		st.Topic = rt.Topic
		st.NumPartitions, st.ReplicationFactor = -1, -1
		configs := map[string]string{}
		for _, cfg := range rt.Configs {
			if cfg.Value != nil {
				configs[cfg.Name] = *cfg.Value
			}
		}
		partitions := rt.NumPartitions
		if partitions == -1 {
			partitions = 1
		}
		var err error
		switch {
		case !c.may(TopicResource, rt.Topic, Manager) && !c.may(ClusterResource, "", Manager):
			st.ErrorCode = kerr.TopicAuthorizationFailed.Code
			st.ErrorMessage = kmsg.StringPtr("creating this topic needs the Manager role on it or on the cluster")
		case c.b.notController() != nil:
			st.ErrorCode = c.b.notController().Code
		case !slices.Contains([]int16{-1, 1, 3}, rt.ReplicationFactor):
			st.ErrorCode = kerr.InvalidReplicationFactor.Code
			st.ErrorMessage = kmsg.StringPtr("the replication factor must be 3, 1 or -1 (the default); this single-node deployment keeps one replica of each partition")
		case len(rt.ReplicaAssignment) > 0:
			st.ErrorCode = kerr.InvalidRequest.Code
			st.ErrorMessage = kmsg.StringPtr("manual replica assignment is not supported")
		case r.ValidateOnly:
			err = c.b.topics.validateCreate(rt.Topic, partitions, c.b.cfg.MaxPartitions, configs)
		default:
			var t *topic
			if t, err = c.b.topics.create(rt.Topic, partitions, c.b.cfg.MaxPartitions, configs); err == nil {
				st.TopicID = t.id
			}
		}
		if err != nil {
			st.ErrorCode, st.ErrorMessage = kafkaError(err)
		}
		if st.ErrorCode == 0 {
			st.NumPartitions, st.ReplicationFactor = partitions, 1
			s := newSettings(configs)
			for _, spec := range topicConfigSpecs {
				e := describeTopicConfig(s, spec)
				cfg := kmsg.NewCreateTopicsResponseTopicConfig()
				cfg.Name, cfg.Value, cfg.Source = e.name, &e.value, int8(e.sourceOf())
				st.Configs = append(st.Configs, cfg)
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
