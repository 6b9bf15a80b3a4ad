package broker

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// Topic configs a topic may set: those Event Streams Enterprise lets users
// set. Each is applied, except min.insync.replicas (one node holds the one
// replica) and the compaction settings, which are stored for the log
// cleaner (see topicSettings.compact).
const (
	cfgCleanupPolicy          = "cleanup.policy"
	cfgRetentionMs            = "retention.ms"
	cfgRetentionBytes         = "retention.bytes"
	cfgSegmentBytes           = "segment.bytes"
	cfgSegmentMs              = "segment.ms"
	cfgMaxMessageBytes        = "max.message.bytes"
	cfgMessageTimestampType   = "message.timestamp.type"
	cfgMinInsyncReplicas      = "min.insync.replicas"
	cfgDeleteRetentionMs      = "delete.retention.ms"
	cfgMinCleanableDirtyRatio = "min.cleanable.dirty.ratio"
	cfgMinCompactionLagMs     = "min.compaction.lag.ms"

	defaultRetentionMs = 7 * 24 * 60 * 60 * 1000
	// defaultMaxMessageBytes is Kafka's and Event Streams' 1 MB plus a
	// batch header.
	defaultMaxMessageBytes = 1048588
	minSegmentBytes        = 1 << 20
	maxSegmentBytes        = 1 << 30
	minSegmentMs           = 5 * 60 * 1000
)

// configSpec is one topic config: its type, default, the broker config it
// defaults from (shown as its synonym) and its rule.
type configSpec struct {
	name, brokerName string
	typ              kmsg.ConfigType
	def              string
	check            func(v string, lim PlanLimits) string // "" or why v is refused
	doc              string
}

var topicConfigSpecs = []configSpec{
	{cfgCleanupPolicy, "log.cleanup.policy", kmsg.ConfigTypeList, "delete", checkCleanupPolicy,
		"delete, compact, or both (compact,delete): what happens to old log segments"},
	{cfgDeleteRetentionMs, "log.cleaner.delete.retention.ms", kmsg.ConfigTypeLong, "86400000", intBetween(0, math.MaxInt64),
		"how long a compacted topic keeps delete markers (tombstones)"},
	{cfgMaxMessageBytes, "message.max.bytes", kmsg.ConfigTypeInt, strconv.Itoa(defaultMaxMessageBytes), checkMaxMessageBytes,
		"the largest record batch the topic accepts"},
	{cfgMessageTimestampType, "log.message.timestamp.type", kmsg.ConfigTypeString, "CreateTime", oneOf("CreateTime", "LogAppendTime"),
		"CreateTime keeps the producer's timestamps; LogAppendTime stamps batches when the broker appends them"},
	{cfgMinCleanableDirtyRatio, "log.cleaner.min.cleanable.ratio", kmsg.ConfigTypeDouble, "0.5", checkRatio,
		"the share of a compacted log not yet cleaned at which it is cleaned"},
	{cfgMinCompactionLagMs, "log.cleaner.min.compaction.lag.ms", kmsg.ConfigTypeLong, "0", intBetween(0, math.MaxInt64),
		"the least time a record stays uncompacted"},
	{cfgMinInsyncReplicas, "min.insync.replicas", kmsg.ConfigTypeInt, "1", intBetween(1, 3),
		"accepted for compatibility: a single-node deployment has one replica, always in sync"},
	{cfgRetentionBytes, "log.retention.bytes", kmsg.ConfigTypeLong, "-1", checkRetentionBytes,
		"the most a partition keeps before deleting old segments; -1 is unlimited"},
	{cfgRetentionMs, "log.retention.ms", kmsg.ConfigTypeLong, strconv.Itoa(defaultRetentionMs), checkRetentionMs,
		"how long a segment is kept after its newest record; -1 is unlimited"},
	{cfgSegmentBytes, "log.segment.bytes", kmsg.ConfigTypeInt, strconv.Itoa(seglog.DefaultSegmentBytes), intBetween(minSegmentBytes, maxSegmentBytes),
		"the size at which a partition starts a new segment"},
	{cfgSegmentMs, "log.roll.ms", kmsg.ConfigTypeLong, strconv.Itoa(defaultRetentionMs), intBetween(minSegmentMs, math.MaxInt64),
		"the age of a segment's first record at which a partition starts a new segment"},
}

func specOf(name string) (configSpec, bool) {
	i := slices.IndexFunc(topicConfigSpecs, func(s configSpec) bool { return s.name == name })
	if i < 0 {
		return configSpec{}, false
	}
	return topicConfigSpecs[i], true
}

// PlanLimits are the limits of a deployment's plan. Zero means no limit
// beyond Kafka's own rules.
type PlanLimits struct {
	MaxPartitions     int32 `json:"max_partitions"`                // partitions of all topics together
	MaxMessageBytes   int64 `json:"max_message_bytes"`             // the highest max.message.bytes
	MaxRetentionMs    int64 `json:"max_retention_ms,omitempty"`    // the highest retention.ms; -1 (unlimited) is refused
	MaxRetentionBytes int64 `json:"max_retention_bytes,omitempty"` // the highest retention.bytes; -1 is refused
	// ProducerByteRate and ConsumerByteRate are each user's client quotas
	// (quota.go) where AlterClientQuotas set none; 0: no quota.
	ProducerByteRate int64 `json:"producer_byte_rate,omitempty"`
	ConsumerByteRate int64 `json:"consumer_byte_rate,omitempty"`
}

// withDefaults bounds max.message.bytes by the largest request when the
// plan does not.
func (l PlanLimits) withDefaults(maxRequest int32) PlanLimits {
	if l.MaxMessageBytes <= 0 || l.MaxMessageBytes > int64(maxRequest) {
		l.MaxMessageBytes = int64(maxRequest)
	}
	return l
}

func intBetween(lo, hi int64) func(string, PlanLimits) string {
	return func(v string, _ PlanLimits) string { return checkInt(v, lo, hi) }
}

func checkInt(v string, lo, hi int64) string {
	n, err := strconv.ParseInt(v, 10, 64)
	switch {
	case err != nil:
		return "must be an integer"
	case n < lo:
		return fmt.Sprintf("must be at least %d", lo)
	case n > hi:
		return fmt.Sprintf("must be at most %d", hi)
	}
	return ""
}

func oneOf(values ...string) func(string, PlanLimits) string {
	return func(v string, _ PlanLimits) string {
		if !slices.Contains(values, v) {
			return "must be one of " + strings.Join(values, ", ")
		}
		return ""
	}
}

func checkRatio(v string, _ PlanLimits) string {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || f > 1 || math.IsNaN(f) {
		return "must be a number from 0 to 1"
	}
	return ""
}

func checkCleanupPolicy(v string, _ PlanLimits) string {
	policies := splitList(v)
	if len(policies) == 0 {
		return "must be delete, compact or compact,delete"
	}
	for i, p := range policies {
		if p != "delete" && p != "compact" || slices.Index(policies, p) != i {
			return "must be delete, compact or compact,delete"
		}
	}
	return ""
}

func checkMaxMessageBytes(v string, lim PlanLimits) string {
	return checkInt(v, 1, lim.MaxMessageBytes)
}

func checkRetentionMs(v string, lim PlanLimits) string {
	return checkCapped(v, lim.MaxRetentionMs)
}

func checkRetentionBytes(v string, lim PlanLimits) string {
	return checkCapped(v, lim.MaxRetentionBytes)
}

// checkCapped checks a retention limit: -1 (unlimited) or more, or, under
// a plan's cap, 1 to the cap.
func checkCapped(v string, cap int64) string {
	if cap <= 0 {
		return checkInt(v, -1, math.MaxInt64)
	}
	if why := checkInt(v, 1, cap); why != "" {
		return why + " on this plan (it does not allow -1, unlimited)"
	}
	return ""
}

func splitList(v string) []string {
	var out []string
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// invalidConfig is the INVALID_CONFIG error naming the config.
func invalidConfig(op, name, why string) error {
	return errs.Ef(op, errs.Invalid, kerr.InvalidConfig.Message, "%s %s", name, why).On("field", "configs."+name)
}

// validateConfigs checks configs a topic is to have.
func validateConfigs(op string, configs map[string]string, lim PlanLimits) error {
	for _, name := range slices.Sorted(maps.Keys(configs)) {
		spec, ok := specOf(name)
		if !ok {
			return errs.Ef(op, errs.Invalid, kerr.InvalidConfig.Message, "unknown topic config %q (topics take %s)", name, strings.Join(configNames(), ", ")).On("field", "configs."+name)
		}
		if why := spec.check(configs[name], lim); why != "" {
			return invalidConfig(op, name, why)
		}
	}
	return nil
}

func configNames() []string {
	names := make([]string, len(topicConfigSpecs))
	for i, s := range topicConfigSpecs {
		names[i] = s.name
	}
	return names
}

// topicSettings are a topic's configs, validated and parsed. A topic's
// settings are replaced whole when its configs change, never changed.
type topicSettings struct {
	set map[string]string // configs set on the topic; others are defaults

	retentionMs, retentionBytes int64
	segmentBytes                int64 // 0 when not set: the store's size
	segmentMs                   int64
	maxMessageBytes             int64
	logAppendTime               bool
	// deletes: retention removes old segments. compact: the log cleaner
	// (compaction.go) keeps each key's newest record, honouring
	// delete.retention.ms, min.cleanable.dirty.ratio and
	// min.compaction.lag.ms (see value); produce already refuses keyless
	// records to such topics, as Kafka does.
	deletes, compact bool
}

func newSettings(set map[string]string) *topicSettings {
	s := &topicSettings{set: maps.Clone(set)}
	if s.set == nil {
		s.set = map[string]string{}
	}
	s.retentionMs = s.int(cfgRetentionMs)
	s.retentionBytes = s.int(cfgRetentionBytes)
	if _, ok := s.set[cfgSegmentBytes]; ok {
		s.segmentBytes = s.int(cfgSegmentBytes)
	}
	s.segmentMs = s.int(cfgSegmentMs)
	s.maxMessageBytes = s.int(cfgMaxMessageBytes)
	s.logAppendTime = s.value(cfgMessageTimestampType) == "LogAppendTime"
	policies := splitList(s.value(cfgCleanupPolicy))
	s.deletes, s.compact = slices.Contains(policies, "delete"), slices.Contains(policies, "compact")
	return s
}

// value is a config's value: set on the topic, or its default.
func (s *topicSettings) value(name string) string {
	if v, ok := s.set[name]; ok {
		return v
	}
	spec, _ := specOf(name)
	return spec.def
}

func (s *topicSettings) int(name string) int64 {
	n, _ := strconv.ParseInt(s.value(name), 10, 64)
	return n
}

// rollSetter is a partition log that rolls segments by a topic's
// segment.bytes and segment.ms (the seglog partition).
type rollSetter interface {
	SetRoll(segmentBytes, segmentMs int64)
}

// applyRoll passes t's segment settings to its partitions' logs.
func applyRoll(s *topicSettings, parts []*partition) {
	for _, p := range parts {
		if r, ok := p.log.(rollSetter); ok {
			r.SetRoll(s.segmentBytes, s.segmentMs)
		}
	}
}

// configOp is one change to a topic's configs.
type configOp struct {
	name  string
	op    kmsg.IncrementalAlterConfigOp
	value *string
}

// applyOps returns set with ops applied; ops name each config at most once.
func applyOps(op string, set map[string]string, ops []configOp) (map[string]string, error) {
	out := maps.Clone(set)
	if out == nil {
		out = map[string]string{}
	}
	seen := map[string]bool{}
	for _, o := range ops {
		spec, ok := specOf(o.name)
		switch {
		case seen[o.name]:
			return nil, errs.Ef(op, errs.Invalid, kerr.InvalidRequest.Message, "config %s is changed twice in one request", o.name)
		case !ok:
			return nil, errs.Ef(op, errs.Invalid, kerr.InvalidConfig.Message, "unknown topic config %q (topics take %s)", o.name, strings.Join(configNames(), ", ")).On("field", "configs."+o.name)
		case o.op != kmsg.IncrementalAlterConfigOpDelete && o.value == nil:
			return nil, errs.Ef(op, errs.Invalid, kerr.InvalidRequest.Message, "config %s needs a value", o.name)
		case (o.op == kmsg.IncrementalAlterConfigOpAppend || o.op == kmsg.IncrementalAlterConfigOpSubtract) && spec.typ != kmsg.ConfigTypeList:
			return nil, invalidConfig(op, o.name, "is not a list: only list configs take APPEND and SUBTRACT")
		}
		seen[o.name] = true
		cur, isSet := out[o.name]
		if !isSet {
			cur = spec.def
		}
		switch o.op {
		case kmsg.IncrementalAlterConfigOpSet:
			out[o.name] = *o.value
		case kmsg.IncrementalAlterConfigOpDelete:
			delete(out, o.name)
		case kmsg.IncrementalAlterConfigOpAppend:
			list := splitList(cur)
			for _, v := range splitList(*o.value) {
				if !slices.Contains(list, v) {
					list = append(list, v)
				}
			}
			out[o.name] = strings.Join(list, ",")
		case kmsg.IncrementalAlterConfigOpSubtract:
			drop := splitList(*o.value)
			out[o.name] = strings.Join(slices.DeleteFunc(splitList(cur), func(v string) bool { return slices.Contains(drop, v) }), ",")
		default:
			return nil, errs.Ef(op, errs.Invalid, kerr.InvalidRequest.Message, "config %s has an unknown operation %d", o.name, o.op)
		}
	}
	return out, nil
}

// alter gives t the configs change returns from its current ones (all of
// them: those not returned go back to their defaults), durably, unless
// validateOnly. Concurrent changes to one topic apply one after the other.
func (c *catalog) alter(op string, t *topic, change func(set map[string]string) (map[string]string, error), validateOnly bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byID[t.id] != t {
		return errs.E(op, errs.NotExist, kerr.UnknownTopicOrPartition.Message, "the topic does not exist")
	}
	set, err := change(t.settings.Load().set)
	if err != nil {
		return err
	}
	if err := validateConfigs(op, set, c.limits); err != nil || validateOnly {
		return err
	}
	s := newSettings(set)
	if err := c.saveRecord(t, int32(len(t.parts)), s.set); err != nil {
		return errs.Internalf(op, err)
	}
	t.settings.Store(s)
	applyRoll(s, t.parts)
	c.log.Debug("topic configs changed", "topic_id", t.id.String(), "configs", len(s.set))
	return nil
}

// replaceConfigs is a change to exactly set; applying ops a change of
// some configs.
func replaceConfigs(set map[string]string) func(map[string]string) (map[string]string, error) {
	return func(map[string]string) (map[string]string, error) { return set, nil }
}

func applying(op string, ops []configOp) func(map[string]string) (map[string]string, error) {
	return func(cur map[string]string) (map[string]string, error) { return applyOps(op, cur, ops) }
}

// checkPlanPartitions refuses adding partitions beyond the plan's total.
// The caller holds c.mu.
func (c *catalog) checkPlanPartitions(op string, add int32) error {
	if c.limits.MaxPartitions <= 0 {
		return nil
	}
	var have int64
	for _, t := range c.byID {
		have += int64(len(t.parts))
	}
	if have+int64(add) > int64(c.limits.MaxPartitions) {
		return errs.Ef(op, errs.Invalid, kerr.PolicyViolation.Message, "the plan allows %d partitions in all; the deployment has %d and this would add %d",
			c.limits.MaxPartitions, have, add).On("field", "partitions")
	}
	return nil
}

// ConfigUpdate changes one topic config: Value nil resets it to its default.
type ConfigUpdate struct {
	Name  string
	Value *string
}

// AlterTopicConfigs changes some of a topic's configs and returns the topic.
func (b *Broker) AlterTopicConfigs(_ context.Context, name string, updates []ConfigUpdate, validateOnly bool) (TopicInfo, error) {
	const op = "broker.AlterTopicConfigs"
	if err := b.leaderOnly(op); err != nil {
		return TopicInfo{}, err
	}
	t := b.topics.byNameOrNil(name)
	if t == nil {
		return TopicInfo{}, errs.E(op, errs.NotExist, kerr.UnknownTopicOrPartition.Message, "the topic does not exist")
	}
	ops := make([]configOp, len(updates))
	for i, u := range updates {
		ops[i] = configOp{name: u.Name, op: kmsg.IncrementalAlterConfigOpSet, value: u.Value}
		if u.Value == nil {
			ops[i].op = kmsg.IncrementalAlterConfigOpDelete
		}
	}
	if err := b.topics.alter(op, t, applying(op, ops), validateOnly); err != nil {
		return TopicInfo{}, err
	}
	return b.topics.info(t), nil
}

// describeTopicConfig is one of a topic's configs as DescribeConfigs and
// CreateTopics show it.
func describeTopicConfig(s *topicSettings, spec configSpec) configEntry {
	_, set := s.set[spec.name]
	return configEntry{name: spec.name, value: s.value(spec.name), isDefault: !set, typ: spec.typ, doc: spec.doc,
		synonym: spec.brokerName, synonymValue: spec.def}
}
