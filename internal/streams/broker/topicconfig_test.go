package broker

import (
	"context"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// describeTopic is a topic's configs by name, as kadm describes them.
func describeTopic(t *testing.T, adm *kadm.Client, topic string) map[string]kadm.Config {
	t.Helper()
	rcs, err := adm.DescribeTopicConfigs(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(topic, nil)
	if err == nil {
		err = rc.Err
	}
	if err != nil {
		t.Fatalf("describe %s: %v", topic, err)
	}
	out := map[string]kadm.Config{}
	for _, c := range rc.Configs {
		out[c.Key] = c
	}
	return out
}

// wantConfigs checks values and sources: a value with a "*" prefix is
// set on the topic (DYNAMIC_TOPIC_CONFIG), one without is a default.
func wantConfigs(t *testing.T, got map[string]kadm.Config, want map[string]string) {
	t.Helper()
	for name, w := range want {
		c, ok := got[name]
		value, dynamic := strings.CutPrefix(w, "*")
		source := kmsg.ConfigSourceDefaultConfig
		if dynamic {
			source = kmsg.ConfigSourceDynamicTopicConfig
		}
		if !ok || c.Value == nil || *c.Value != value || c.Source != source {
			t.Errorf("config %s = %+v (value %v), want %q from %v", name, c, c.MaybeValue(), value, source)
		}
	}
}

func strp(s string) *string { return &s }

func TestCreateTopicWithEventStreamsConfigsDescribesThemWithSources(t *testing.T) {
	tb := startBroker(t, nil)
	adm := tb.admin(t, managerKey)
	configs := map[string]*string{
		"cleanup.policy": strp("compact,delete"), "retention.ms": strp("3600000"), "retention.bytes": strp("1073741824"),
		"segment.bytes": strp("10485760"), "segment.ms": strp("600000"), "max.message.bytes": strp("2000000"),
		"message.timestamp.type": strp("LogAppendTime"), "min.insync.replicas": strp("2"),
		"delete.retention.ms": strp("1000"), "min.cleanable.dirty.ratio": strp("0.25"), "min.compaction.lag.ms": strp("5000"),
	}
	resp, err := adm.CreateTopic(testCtx(t), 2, 3, configs, "accounts")
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("create with replication.factor=3 and Event Streams configs: %v (%s)", err, resp.ErrMessage)
	}
	if resp.ReplicationFactor != 1 {
		t.Errorf("create answered replication factor %d; one node keeps one replica", resp.ReplicationFactor)
	}
	want := map[string]string{"retention.bytes": "-1"}
	for k, v := range configs {
		want[k] = "*" + *v
	}
	wantConfigs(t, describeTopic(t, adm, "accounts"), want)
	wantConfigs(t, describeTopic(t, adm, "accounts"), map[string]string{})
	plain := tb.admin(t, managerKey)
	if _, err := plain.CreateTopic(testCtx(t), 1, -1, nil, "defaults"); err != nil {
		t.Fatal(err)
	}
	wantConfigs(t, describeTopic(t, plain, "defaults"), map[string]string{"cleanup.policy": "delete", "max.message.bytes": "1048588",
		"retention.ms": "604800000", "segment.ms": "604800000", "message.timestamp.type": "CreateTime", "min.insync.replicas": "1"})

	// One replica, honestly: Metadata shows one replica in sync.
	details, err := adm.ListTopics(testCtx(t), "accounts")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range details["accounts"].Partitions {
		if len(p.Replicas) != 1 || len(p.ISR) != 1 {
			t.Errorf("partition %d: replicas %v ISR %v, want one of each", p.Partition, p.Replicas, p.ISR)
		}
	}
}

func TestCreateTopicRefusesBadConfigsAndReplicationFactors(t *testing.T) {
	tb := startBroker(t, nil)
	adm := tb.admin(t, managerKey)
	tests := []struct {
		name     string
		rf       int16
		configs  map[string]*string
		want     *kerr.Error
		mentions string
	}{
		{"replication factor 2", 2, nil, kerr.InvalidReplicationFactor, "replication factor"},
		{"unknown config", 3, map[string]*string{"leader.imbalance.per.broker.percentage": strp("5")}, kerr.InvalidConfig, "leader.imbalance.per.broker.percentage"},
		{"segment.bytes too small", 3, map[string]*string{"segment.bytes": strp("100")}, kerr.InvalidConfig, "segment.bytes"},
		{"timestamp type", 3, map[string]*string{"message.timestamp.type": strp("Whenever")}, kerr.InvalidConfig, "message.timestamp.type"},
		{"ratio", 3, map[string]*string{"min.cleanable.dirty.ratio": strp("2")}, kerr.InvalidConfig, "min.cleanable.dirty.ratio"},
		{"policy", 3, map[string]*string{"cleanup.policy": strp("compact,compact")}, kerr.InvalidConfig, "cleanup.policy"},
		{"message size above the request limit", 3, map[string]*string{"max.message.bytes": strp("999999999999")}, kerr.InvalidConfig, "max.message.bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := adm.CreateTopic(testCtx(t), 1, tt.rf, tt.configs, "refused")
			if err == nil {
				err = resp.Err
			}
			if !errors.Is(err, tt.want) || !strings.Contains(resp.ErrMessage, tt.mentions) {
				t.Fatalf("got %v %q, want %v naming %s", err, resp.ErrMessage, tt.want, tt.mentions)
			}
		})
	}
	if got := tb.Topics(t.Context()); len(got) != 0 {
		t.Fatalf("refused creates left topics: %v", got)
	}
}

func TestAlterConfigsAndIncrementalAlterConfigs(t *testing.T) {
	tb := startBroker(t, nil)
	adm := tb.admin(t, managerKey)
	if _, err := adm.CreateTopic(testCtx(t), 1, 3, map[string]*string{"retention.ms": strp("60000")}, "ledger"); err != nil {
		t.Fatal(err)
	}
	alter := func(incremental, validate bool, client *kadm.Client, cfgs ...kadm.AlterConfig) (kadm.AlterConfigsResponse, error) {
		t.Helper()
		var rs kadm.AlterConfigsResponses
		var err error
		switch {
		case incremental && validate:
			rs, err = client.ValidateAlterTopicConfigs(testCtx(t), cfgs, "ledger")
		case incremental:
			rs, err = client.AlterTopicConfigs(testCtx(t), cfgs, "ledger")
		default:
			rs, err = client.AlterTopicConfigsState(testCtx(t), cfgs, "ledger")
		}
		if err != nil {
			return kadm.AlterConfigsResponse{}, err
		}
		r, err := rs.On("ledger", nil)
		if err == nil {
			err = r.Err
		}
		return r, err
	}
	steps := []struct {
		name        string
		incremental bool
		validate    bool
		key         string
		cfgs        []kadm.AlterConfig
		wantErr     *kerr.Error
		want        map[string]string
	}{
		{"set", true, false, managerKey, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: strp("500000")}, {Op: kadm.SetConfig, Name: "segment.ms", Value: strp("3600000")}},
			nil, map[string]string{"retention.ms": "*60000", "max.message.bytes": "*500000", "segment.ms": "*3600000"}},
		{"delete goes back to the default", true, false, managerKey, []kadm.AlterConfig{{Op: kadm.DeleteConfig, Name: "retention.ms"}},
			nil, map[string]string{"retention.ms": "604800000", "max.message.bytes": "*500000"}},
		{"append to a list", true, false, managerKey, []kadm.AlterConfig{{Op: kadm.AppendConfig, Name: "cleanup.policy", Value: strp("compact")}},
			nil, map[string]string{"cleanup.policy": "*delete,compact"}},
		{"subtract from a list", true, false, managerKey, []kadm.AlterConfig{{Op: kadm.SubtractConfig, Name: "cleanup.policy", Value: strp("delete")}},
			nil, map[string]string{"cleanup.policy": "*compact"}},
		{"append to a number is refused", true, false, managerKey, []kadm.AlterConfig{{Op: kadm.AppendConfig, Name: "retention.ms", Value: strp("1")}},
			kerr.InvalidConfig, map[string]string{"retention.ms": "604800000"}},
		{"bad value is refused", true, false, managerKey, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: strp("soon")}},
			kerr.InvalidConfig, map[string]string{"retention.ms": "604800000"}},
		{"validate only changes nothing", true, true, managerKey, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: strp("1000")}},
			nil, map[string]string{"retention.ms": "604800000"}},
		{"a writer may not alter", true, false, writerKey, []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: strp("1000")}},
			kerr.TopicAuthorizationFailed, map[string]string{"retention.ms": "604800000"}},
		{"AlterConfigs replaces the whole set", false, false, managerKey, []kadm.AlterConfig{{Name: "retention.bytes", Value: strp("1048576")}},
			nil, map[string]string{"retention.bytes": "*1048576", "cleanup.policy": "delete", "max.message.bytes": "1048588", "segment.ms": "604800000"}},
		{"AlterConfigs refuses unknown configs", false, false, managerKey, []kadm.AlterConfig{{Name: "flush.ms", Value: strp("1")}},
			kerr.InvalidConfig, map[string]string{"retention.bytes": "*1048576"}},
	}
	for _, s := range steps {
		r, err := alter(s.incremental, s.validate, tb.admin(t, s.key), s.cfgs...)
		if s.wantErr == nil && err != nil || s.wantErr != nil && !errors.Is(err, s.wantErr) {
			t.Fatalf("%s: %v (%s), want %v", s.name, err, r.ErrMessage, s.wantErr)
		}
		if s.wantErr == kerr.InvalidConfig && !strings.Contains(r.ErrMessage, s.cfgs[0].Name) {
			t.Errorf("%s: message %q does not name %s", s.name, r.ErrMessage, s.cfgs[0].Name)
		}
		wantConfigs(t, describeTopic(t, adm, "ledger"), s.want)
	}
	rs, err := adm.AlterBrokerConfigs(testCtx(t), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "log.retention.ms", Value: strp("1")}}, 1)
	if err != nil || len(rs) != 1 || !errors.Is(rs[0].Err, kerr.PolicyViolation) {
		t.Fatalf("altering broker configs: %v %+v, want POLICY_VIOLATION", err, rs)
	}
	bc, err := adm.DescribeBrokerConfigs(testCtx(t), 1)
	if err != nil || len(bc) != 1 {
		t.Fatalf("describe broker: %v %v", err, bc)
	}
	seen := map[string]bool{}
	for _, c := range bc[0].Configs {
		seen[c.Key] = true
	}
	for _, name := range []string{"log.retention.ms", "log.segment.bytes", "message.max.bytes", "default.replication.factor", "broker.id"} {
		if !seen[name] {
			t.Errorf("broker configs lack %s", name)
		}
	}
}

func TestTopicConfigsSurviveRestart(t *testing.T) {
	store := newMemStore()
	tb := startBroker(t, store)
	adm := tb.admin(t, managerKey)
	if _, err := adm.CreateTopic(testCtx(t), 1, 3, map[string]*string{"cleanup.policy": strp("compact")}, "profiles"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.AlterTopicConfigs(testCtx(t), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: strp("4096")}}, "profiles"); err != nil {
		t.Fatal(err)
	}
	tb.Close()
	again := startBroker(t, store)
	got := describeTopic(t, again.admin(t, readerKey), "profiles")
	wantConfigs(t, got, map[string]string{"cleanup.policy": "*compact", "max.message.bytes": "*4096", "retention.ms": "604800000"})
	cl := again.client(t, writerKey, kgo.DefaultProduceTopic("profiles"), kgo.ProducerBatchCompression(kgo.NoCompression()))
	err := cl.ProduceSync(testCtx(t), &kgo.Record{Key: []byte("k"), Value: make([]byte, 8192)}).FirstErr()
	if !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("produce above the restored max.message.bytes: %v", err)
	}
}

func TestMaxMessageBytesRefusesLargerBatches(t *testing.T) {
	tb := startBroker(t, nil)
	adm := tb.admin(t, managerKey)
	if _, err := adm.CreateTopic(testCtx(t), 1, 1, map[string]*string{"max.message.bytes": strp("2000")}, "small"); err != nil {
		t.Fatal(err)
	}
	cl := tb.client(t, writerKey, kgo.DefaultProduceTopic("small"), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: make([]byte, 500)}).FirstErr(); err != nil {
		t.Fatalf("produce below the limit: %v", err)
	}
	if err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: make([]byte, 5000)}).FirstErr(); !errors.Is(err, kerr.MessageTooLarge) {
		t.Fatalf("produce above max.message.bytes: %v, want MESSAGE_TOO_LARGE", err)
	}
	if _, err := adm.AlterTopicConfigs(testCtx(t), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "max.message.bytes", Value: strp("100000")}}, "small"); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: make([]byte, 5000)}).FirstErr(); err != nil {
		t.Fatalf("produce after raising max.message.bytes: %v", err)
	}
}

func TestLogAppendTimeStampsBatches(t *testing.T) {
	clock := &fakeClock{now: time.UnixMilli(1_800_000_000_000)}
	tb := startBroker(t, nil, func(c *Config) { c.Clock = clock })
	adm := tb.admin(t, managerKey)
	for topic, typ := range map[string]string{"stamped": "LogAppendTime", "kept": "CreateTime"} {
		if _, err := adm.CreateTopic(testCtx(t), 1, 1, map[string]*string{"message.timestamp.type": &typ}, topic); err != nil {
			t.Fatal(err)
		}
	}
	produced := time.UnixMilli(1_000_000_000_000)
	w := tb.client(t, writerKey)
	for _, topic := range []string{"stamped", "kept"} {
		r := &kgo.Record{Topic: topic, Value: []byte("v"), Timestamp: produced}
		if err := w.ProduceSync(testCtx(t), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// The produce response's LogAppendTime, read by a raw request.
	var batch kmsg.RecordBatch
	rec := kmsg.Record{Value: []byte("raw")}
	batch.Magic, batch.NumRecords, batch.FirstTimestamp, batch.MaxTimestamp, batch.ProducerID = 2, 1, produced.UnixMilli(), produced.UnixMilli(), -1
	rec.Length = int32(len(rec.AppendTo(nil)) - 1) // the length varint of 0 is one byte, as is this one's
	batch.Records = rec.AppendTo(nil)
	raw := batch.AppendTo(nil)
	batch.Length = int32(len(raw) - batchLengthOverhead)
	raw = batch.AppendTo(nil)
	batch.CRC = int32(crc32Of(raw))
	raw = batch.AppendTo(nil)
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = "stamped", tb.topics.byNameOrNil("stamped").id
	rp := kmsg.NewProduceRequestTopicPartition()
	rp.Records = raw
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), w)
	if err != nil {
		t.Fatal(err)
	}
	sp := resp.Topics[0].Partitions[0]
	if sp.ErrorCode != 0 || sp.LogAppendTime != clock.Now().UnixMilli() {
		t.Fatalf("produce response: error %d LogAppendTime %d, want %d", sp.ErrorCode, sp.LogAppendTime, clock.Now().UnixMilli())
	}

	r := tb.client(t, readerKey, kgo.ConsumeTopics("stamped", "kept"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	for _, got := range consume(t, r, 3) {
		want, typ := produced, int8(0)
		if got.Topic == "stamped" {
			want, typ = clock.Now(), 1
		}
		if !got.Timestamp.Equal(want) || got.Attrs.TimestampType() != typ {
			t.Errorf("%s record: timestamp %v type %d, want %v type %d", got.Topic, got.Timestamp, got.Attrs.TimestampType(), want, typ)
		}
	}
}

func TestCompactedTopicsNeedKeys(t *testing.T) {
	tb := startBroker(t, nil)
	adm := tb.admin(t, managerKey)
	if _, err := adm.CreateTopic(testCtx(t), 1, 3, map[string]*string{"cleanup.policy": strp("compact")}, "latest"); err != nil {
		t.Fatal(err)
	}
	for _, codec := range []kgo.CompressionCodec{kgo.NoCompression(), kgo.GzipCompression(), kgo.SnappyCompression(), kgo.Lz4Compression(), kgo.ZstdCompression()} {
		cl := tb.client(t, writerKey, kgo.DefaultProduceTopic("latest"), kgo.ProducerBatchCompression(codec))
		if err := cl.ProduceSync(testCtx(t), &kgo.Record{Key: []byte("user-1"), Value: []byte(strings.Repeat("v", 200))}).FirstErr(); err != nil {
			t.Fatalf("%v: keyed record: %v", codec, err)
		}
		if err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: []byte(strings.Repeat("v", 200))}).FirstErr(); !errors.Is(err, kerr.InvalidRecord) {
			t.Fatalf("%v: keyless record to a compacted topic: %v, want INVALID_RECORD", codec, err)
		}
	}
}

// TestCompactOnlyTopicsAreNotRetained: retention deletes only under the
// delete policy; compaction is the cleaner's.
func TestCompactOnlyTopicsAreNotRetained(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	tb := startBroker(t, nil, func(c *Config) { c.Clock = clock })
	cl := tb.client(t, writerKey)
	for topic, policy := range map[string]string{"kept": "compact", "dropped": "compact,delete"} {
		if _, err := tb.CreateTopic(context.Background(), topic, 1, map[string]string{"cleanup.policy": policy, "retention.ms": "60000"}); err != nil {
			t.Fatal(err)
		}
		for i := range 2 { // two batches: a store keeps its newest
			if err := cl.ProduceSync(testCtx(t), &kgo.Record{Topic: topic, Key: []byte("k"), Value: []byte{byte(i)}}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
	}
	clock.Advance(2 * time.Minute)
	tb.applyRetention()
	if got := startOffset(tb, "kept"); got != 0 {
		t.Errorf("compact-only topic retained from %d", got)
	}
	if got := startOffset(tb, "dropped"); got != 1 {
		t.Errorf("compact,delete topic starts at %d after retention, want 1", got)
	}
}

func crc32Of(batch []byte) uint32 { return crc32.Checksum(batch[batchCRCStart:], castagnoli) }
