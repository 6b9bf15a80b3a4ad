package broker

import (
	"cmp"
	"context"
	"slices"
	"strconv"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDescribeConfigs describes every topic config with its source, and
// the broker's settings. sarama's ListTopics depends on it.
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
				s := t.settings.Load()
				for _, spec := range topicConfigSpecs {
					entries = append(entries, describeTopicConfig(s, spec))
				}
			}
		case kmsg.ConfigResourceTypeBroker:
			if !c.may(ClusterResource, "", Reader) {
				res.ErrorCode = kerr.ClusterAuthorizationFailed.Code
				break
			}
			entries = c.b.brokerConfigs()
		default:
			res.ErrorCode = kerr.InvalidRequest.Code
			res.ErrorMessage = kmsg.StringPtr("only topic and broker configs can be described")
		}
		for _, e := range entries {
			if rr.ConfigNames != nil && !slices.Contains(rr.ConfigNames, e.name) {
				continue
			}
			res.Configs = append(res.Configs, e.describe(r))
		}
		resp.Resources = append(resp.Resources, res)
	}
	return resp, nil
}

// brokerConfigs are the broker's settings, all read-only: a deployment's
// broker is configured by Keyline, not by its users.
func (b *Broker) brokerConfigs() []configEntry {
	static := func(name, value string, typ kmsg.ConfigType) configEntry {
		return configEntry{name: name, value: value, typ: typ, source: kmsg.ConfigSourceStaticBrokerConfig, readOnly: true}
	}
	def := func(name, value string, typ kmsg.ConfigType) configEntry {
		return configEntry{name: name, value: value, typ: typ, isDefault: true, source: kmsg.ConfigSourceDefaultConfig, readOnly: true}
	}
	out := []configEntry{
		static("auto.create.topics.enable", strconv.FormatBool(b.cfg.AutoCreateTopics), kmsg.ConfigTypeBoolean),
		static("broker.id", strconv.Itoa(int(b.cfg.NodeID)), kmsg.ConfigTypeInt),
		def("default.replication.factor", "1", kmsg.ConfigTypeShort),
		def("num.partitions", "1", kmsg.ConfigTypeInt),
		static("socket.request.max.bytes", strconv.Itoa(int(b.cfg.MaxRequestBytes)), kmsg.ConfigTypeInt),
	}
	for _, spec := range topicConfigSpecs {
		out = append(out, def(spec.brokerName, spec.def, spec.typ))
	}
	slices.SortFunc(out, func(a, b configEntry) int { return cmp.Compare(a.name, b.name) })
	return out
}

type configEntry struct {
	name, value string
	isDefault   bool
	typ         kmsg.ConfigType
	doc         string
	// source is where a broker config comes from; a topic config's is
	// DYNAMIC_TOPIC_CONFIG when set on the topic, else DEFAULT_CONFIG.
	source   kmsg.ConfigSource
	readOnly bool
	// synonym is the broker config a topic config defaults from, with its
	// value.
	synonym, synonymValue string
}

func (e configEntry) sourceOf() kmsg.ConfigSource {
	switch {
	case e.source != 0:
		return e.source
	case e.isDefault:
		return kmsg.ConfigSourceDefaultConfig
	}
	return kmsg.ConfigSourceDynamicTopicConfig
}

func (e configEntry) describe(r *kmsg.DescribeConfigsRequest) kmsg.DescribeConfigsResponseResourceConfig {
	rc := kmsg.NewDescribeConfigsResponseResourceConfig()
	rc.Name, rc.Value, rc.IsDefault, rc.ConfigType, rc.ReadOnly = e.name, &e.value, e.isDefault, e.typ, e.readOnly
	rc.Source = e.sourceOf()
	if r.IncludeDocumentation && e.doc != "" {
		rc.Documentation = kmsg.StringPtr(e.doc)
	}
	if r.Version >= 1 && r.IncludeSynonyms {
		rc.ConfigSynonyms = []kmsg.DescribeConfigsResponseResourceConfigConfigSynonym{{Name: e.name, Value: &e.value, Source: rc.Source}}
		if !e.isDefault && e.synonym != "" {
			rc.ConfigSynonyms = append(rc.ConfigSynonyms, kmsg.DescribeConfigsResponseResourceConfigConfigSynonym{
				Name: e.synonym, Value: kmsg.StringPtr(e.synonymValue), Source: kmsg.ConfigSourceDefaultConfig})
		}
	}
	return rc
}
