package broker

import (
	"context"
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDescribeConfigs describes topic configs and a few broker settings.
// sarama's ListTopics depends on it.
func (c *conn) handleDescribeConfigs(_ context.Context, r *kmsg.DescribeConfigsRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.DescribeConfigsResponse)
	for _, rr := range r.Resources {
		res := kmsg.NewDescribeConfigsResponseResource()
		res.ResourceType, res.ResourceName = rr.ResourceType, rr.ResourceName
		var entries []configEntry
		switch rr.ResourceType {
		case kmsg.ConfigResourceTypeTopic:
			t := c.b.topics.byNameOrNil(rr.ResourceName)
			switch {
			case !c.mayTopic(t, rr.ResourceName, Reader):
				res.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case t == nil:
				res.ErrorCode = kerr.UnknownTopicOrPartition.Code
			default:
				for _, name := range []string{cfgCleanupPolicy, cfgRetentionBytes, cfgRetentionMs} {
					_, set := t.configs[name]
					entries = append(entries, configEntry{name, t.config(name), !set, configTypes[name]})
				}
			}
		case kmsg.ConfigResourceTypeBroker:
			if !c.may(ClusterResource, "", Reader) {
				res.ErrorCode = kerr.ClusterAuthorizationFailed.Code
				break
			}
			entries = []configEntry{
				{"auto.create.topics.enable", strconv.FormatBool(c.b.cfg.AutoCreateTopics), true, kmsg.ConfigTypeBoolean},
				{"message.max.bytes", strconv.Itoa(int(c.b.cfg.MaxRequestBytes)), true, kmsg.ConfigTypeInt},
			}
		default:
			res.ErrorCode = kerr.InvalidRequest.Code
			res.ErrorMessage = kmsg.StringPtr("only topic and broker configs can be described")
		}
		for _, e := range entries {
			if rr.ConfigNames != nil && !slices.Contains(rr.ConfigNames, e.name) {
				continue
			}
			res.Configs = append(res.Configs, e.describe(r.Version))
		}
		resp.Resources = append(resp.Resources, res)
	}
	return resp, nil
}

type configEntry struct {
	name, value string
	isDefault   bool
	typ         kmsg.ConfigType
}

var configTypes = map[string]kmsg.ConfigType{
	cfgCleanupPolicy:  kmsg.ConfigTypeList,
	cfgRetentionBytes: kmsg.ConfigTypeLong,
	cfgRetentionMs:    kmsg.ConfigTypeLong,
}

func (e configEntry) describe(version int16) kmsg.DescribeConfigsResponseResourceConfig {
	rc := kmsg.NewDescribeConfigsResponseResourceConfig()
	rc.Name, rc.Value, rc.IsDefault, rc.ConfigType = e.name, &e.value, e.isDefault, e.typ
	rc.Source = kmsg.ConfigSourceDynamicTopicConfig
	if e.isDefault {
		rc.Source = kmsg.ConfigSourceDefaultConfig
	}
	if version >= 1 {
		rc.ConfigSynonyms = []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym{{Name: e.name, Value: &e.value, Source: rc.Source}}
	}
	return rc
}
