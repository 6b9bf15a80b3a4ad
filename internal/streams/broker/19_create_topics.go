package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleCreateTopics creates topics on this single broker: the replication
// factor is 1 (or -1, the default).
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
		case rt.ReplicationFactor != -1 && rt.ReplicationFactor != 1:
			st.ErrorCode = kerr.InvalidReplicationFactor.Code
			st.ErrorMessage = kmsg.StringPtr("this deployment has one broker: the replication factor is 1")
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
			for _, name := range []string{cfgCleanupPolicy, cfgRetentionBytes, cfgRetentionMs} {
				cfg := kmsg.NewCreateTopicsResponseTopicConfig()
				v, set := configs[name]
				if !set {
					v = topicConfigDefaults[name]
				}
				cfg.Name, cfg.Value = name, &v
				cfg.Source = int8(kmsg.ConfigSourceDefaultConfig)
				if set {
					cfg.Source = int8(kmsg.ConfigSourceDynamicTopicConfig)
				}
				st.Configs = append(st.Configs, cfg)
			}
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
