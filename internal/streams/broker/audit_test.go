package broker

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// changeLog collects what a broker's ChangeRecorder is given.
type changeLog struct {
	mu      sync.Mutex
	changes []Change
}

func (l *changeLog) record(_ context.Context, ch Change) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.changes = append(l.changes, ch)
}

// summary is each change as "action name status login-user".
func (l *changeLog) summary() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, ch := range l.changes {
		user := ""
		if ch.Login != nil {
			user = ch.Login.User
			if ch.Login.Password == "" || ch.Login.Addr == "" {
				user += "(no login)"
			}
		}
		out = append(out, fmt.Sprintf("%s %s %d %s", ch.Action, ch.Name, ch.Status, user))
	}
	return out
}

// Every Kafka API that changes a topic or a group is recorded once per
// topic or group, successes and refusals alike; validate-only requests,
// reads, produce and fetch are not.
func TestKafkaTopicAndGroupChangesAreRecorded(t *testing.T) {
	log := &changeLog{}
	tb := startBroker(t, nil, func(c *Config) { c.Audit = log.record })
	ctx := testCtx(t)
	adm := tb.admin(t, managerKey)
	reader := tb.admin(t, readerKey)

	if _, err := adm.ValidateCreateTopics(ctx, 1, 1, nil, "dry"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopics(ctx, 2, 1, nil, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopics(ctx, 1, 1, nil, "t1"); err != nil { // exists
		t.Fatal(err)
	}
	if _, err := adm.CreatePartitions(ctx, 1, "t1"); err != nil { // 3 in all
		t.Fatal(err)
	}
	if _, err := adm.UpdatePartitions(ctx, 1, "t1"); err != nil { // fewer
		t.Fatal(err)
	}
	if _, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("60000")}}, "t1"); err != nil {
		t.Fatal(err)
	}
	// The legacy AlterConfigs (API 33) too.
	legacy := kmsg.NewPtrAlterConfigsRequest()
	res := kmsg.NewAlterConfigsRequestResource()
	res.ResourceType, res.ResourceName = kmsg.ConfigResourceTypeTopic, "t1"
	cfg := kmsg.NewAlterConfigsRequestResourceConfig()
	cfg.Name, cfg.Value = "retention.ms", kmsg.StringPtr("70000")
	res.Configs = append(res.Configs, cfg)
	legacy.Resources = append(legacy.Resources, res)
	if _, err := legacy.RequestWith(ctx, tb.client(t, managerKey)); err != nil {
		t.Fatal(err)
	}
	// Produce, fetch and reads are not changes.
	cl := tb.client(t, managerKey, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "t1", Partition: 0, Value: []byte("x")}, &kgo.Record{Topic: "t1", Partition: 0, Value: []byte("y")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.ListTopics(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.DeleteRecords(ctx, kadmOffsets("t1", 0, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CommitOffsets(ctx, "g1", kadmOffsets("t1", 0, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.DeleteOffsets(ctx, "g1", kadm.TopicsSet{"t1": {0: {}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.DeleteGroups(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.DeleteGroups(ctx, "g1"); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.DeleteTopics(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.DeleteTopics(ctx, "t1"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"topic.create t1 200 token",
		"topic.create t1 409 token",
		"topic.update t1 200 token",
		"topic.update t1 400 token",
		"topic.update t1 200 token",
		"topic.update t1 200 token",
		"message.delete t1 200 token",
		"group-offset.delete g1 200 token",
		"group.delete g1 403 token",
		"group.delete g1 200 token",
		"topic.delete t1 403 token",
		"topic.delete t1 200 token",
	}
	if got := log.summary(); !slices.Equal(got, want) {
		t.Fatalf("recorded:\n%q\nwant:\n%q", got, want)
	}
}

// BenchmarkRecordChangesOnProduce is what auditing costs a produce or fetch
// request: the recorder is set, and the request is no change.
func BenchmarkRecordChangesOnProduce(b *testing.B) {
	c := &conn{b: &Broker{cfg: Config{Audit: func(context.Context, Change) { b.Fatal("a produce request was recorded") }}}}
	req, resp := kmsg.NewPtrProduceRequest(), kmsg.NewPtrProduceResponse()
	for b.Loop() {
		c.recordChanges(req, resp)
	}
}
