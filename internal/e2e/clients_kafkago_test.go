package e2e

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	kafka "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
)

// kafkaGoMatrix is segmentio/kafka-go's row of the client matrix: its
// Client's admin requests, Writer and Reader. kafka-go's Writer cannot
// produce in a transaction, and it has no OAUTHBEARER mechanism: the cell
// uses the few lines of sasl.Mechanism an application writes (oauthBearer).
var kafkaGoMatrix = clientMatrixCase{
	cellCreateCompacted: func(t *testing.T, m *matrix, topic string) {
		cl := kafkaGoClient(m, plainMechanism(m))
		kafkaGoCreateCompacted(t, cl, topic)
		checkTopicConfigs(t, kafkaGoDescribe(t, cl, topic), matrixTopicConfigs)
	},
	cellConfigs: func(t *testing.T, m *matrix, topic string) {
		cl := kafkaGoClient(m, plainMechanism(m))
		kafkaGoCreateCompacted(t, cl, topic)
		inc, err := cl.IncrementalAlterConfigs(testCtx(t), &kafka.IncrementalAlterConfigsRequest{Resources: []kafka.IncrementalAlterConfigsRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
			Configs: []kafka.IncrementalAlterConfigsRequestConfig{{Name: "retention.ms", Value: matrixRetention, ConfigOperation: kafka.ConfigOperationSet}},
		}}})
		if err == nil && len(inc.Resources) == 1 {
			err = inc.Resources[0].Error
		}
		if err != nil {
			t.Fatalf("IncrementalAlterConfigs: %v", err)
		}
		checkTopicConfigs(t, kafkaGoDescribe(t, cl, topic), withRetention())
		alt, err := cl.AlterConfigs(testCtx(t), &kafka.AlterConfigsRequest{Resources: []kafka.AlterConfigRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: topic,
			Configs: []kafka.AlterConfigRequestConfig{{Name: "cleanup.policy", Value: "delete"}},
		}}})
		if err == nil {
			for _, e := range alt.Errors {
				err = errors.Join(err, e)
			}
		}
		if err != nil {
			t.Fatalf("AlterConfigs: %v", err)
		}
		checkTopicConfigs(t, kafkaGoDescribe(t, cl, topic), map[string]string{"cleanup.policy": "delete", "retention.ms": "604800000"})
	},
	cellTransactions: notSupported("kafka-go's Writer has no transactional producer (no transactional.id, no commit or abort)"),
	cellOffsetsForTimes: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 1)
		tr := &kafka.Transport{SASL: plainMechanism(m)}
		w := &kafka.Writer{Addr: kafka.TCP(m.manager.Brokers...), Topic: topic, Transport: tr, BatchSize: 3, BatchTimeout: time.Second,
			RequiredAcks: kafka.RequireAll}
		defer w.Close()
		var msgs []kafka.Message
		for _, r := range batchRecords(topic) {
			msgs = append(msgs, kafka.Message{Value: r.Value, Time: r.Timestamp})
		}
		// One WriteMessages call of BatchSize messages is one batch.
		if err := w.WriteMessages(testCtx(t), msgs...); err != nil {
			t.Fatal(err)
		}
		cl := kafkaGoClient(m, tr.SASL)
		for _, q := range offsetQueries {
			resp, err := cl.ListOffsets(testCtx(t), &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: {{Partition: 0, Timestamp: q.at.UnixMilli()}}}})
			if err != nil {
				t.Fatal(err)
			}
			ps := resp.Topics[topic]
			if len(ps) != 1 || ps[0].Error != nil || len(ps[0].Offsets) != 1 {
				t.Fatalf("ListOffsets for %v: %+v", q.at, ps)
			}
			for o := range ps[0].Offsets {
				if o != q.want {
					t.Errorf("offset for %v: %d, want %d", q.at, o, q.want)
				}
			}
		}
	},
	cellDeleteGroup: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 2)
		cl := kafkaGoClient(m, plainMechanism(m))
		ctx := testCtx(t)
		// A commit outside a group generation, as tools that set a group's
		// offsets send it.
		cresp, err := cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: topic, GenerationID: -1,
			Topics: map[string][]kafka.OffsetCommit{topic: {{Partition: 0, Offset: 5}, {Partition: 1, Offset: 7}}}})
		if err == nil {
			for _, p := range cresp.Topics[topic] {
				err = errors.Join(err, p.Error)
			}
		}
		if err != nil {
			t.Fatalf("OffsetCommit: %v", err)
		}
		dresp, err := cl.OffsetDelete(ctx, &kafka.OffsetDeleteRequest{GroupID: topic, Topics: map[string][]int{topic: {0}}})
		if err == nil {
			err = dresp.Error
			for _, p := range dresp.Topics[topic] {
				err = errors.Join(err, p.Error)
			}
		}
		if err != nil {
			t.Fatalf("OffsetDelete: %v", err)
		}
		fresp, err := cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: topic, Topics: map[string][]int{topic: {0, 1}}})
		if err != nil {
			t.Fatal(err)
		}
		committed := map[int]int64{}
		for _, p := range fresp.Topics[topic] {
			committed[p.Partition] = p.CommittedOffset
		}
		if committed[0] != -1 || committed[1] != 7 {
			t.Fatalf("committed offsets after OffsetDelete of partition 0: %v, want 0:-1 1:7", committed)
		}
		gresp, err := cl.DeleteGroups(ctx, &kafka.DeleteGroupsRequest{GroupIDs: []string{topic}})
		if err == nil {
			err = gresp.Errors[topic]
		}
		if err != nil {
			t.Fatalf("DeleteGroups: %v", err)
		}
		lresp, err := cl.ListGroups(ctx, &kafka.ListGroupsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range lresp.Groups {
			if g.GroupID == topic {
				t.Fatalf("group %s is still listed after DeleteGroups", topic)
			}
		}
	},
	cellOAuthBearer: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 1)
		mech := oauthBearer(func() string { return m.token(t) })
		w := &kafka.Writer{Addr: kafka.TCP(m.manager.Brokers...), Topic: topic, Transport: &kafka.Transport{SASL: mech}, RequiredAcks: kafka.RequireAll}
		defer w.Close()
		if err := w.WriteMessages(testCtx(t), kafka.Message{Value: []byte("over-oauthbearer")}); err != nil {
			t.Fatal(err)
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: m.manager.Brokers, Topic: topic, Partition: 0, MaxWait: 200 * time.Millisecond,
			Dialer: &kafka.Dialer{Timeout: 10 * time.Second, SASLMechanism: mech}})
		defer r.Close()
		msg, err := r.ReadMessage(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if string(msg.Value) != "over-oauthbearer" {
			t.Fatalf("read %q", msg.Value)
		}
		bad := kafkaGoClient(m, oauthBearer(func() string { return "not-an-iam-token" }))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := bad.Metadata(ctx, &kafka.MetadataRequest{}); err == nil {
			t.Fatal(errNotRefused)
		}
	},
}

func plainMechanism(m *matrix) sasl.Mechanism {
	return plain.Mechanism{Username: m.manager.User, Password: m.manager.APIKey}
}

func kafkaGoClient(m *matrix, mech sasl.Mechanism) *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(m.manager.Brokers...), Timeout: 30 * time.Second, Transport: &kafka.Transport{SASL: mech}}
}

func kafkaGoCreateCompacted(t *testing.T, cl *kafka.Client, topic string) {
	t.Helper()
	var entries []kafka.ConfigEntry
	for k, v := range matrixTopicConfigs {
		entries = append(entries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	resp, err := cl.CreateTopics(testCtx(t), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: 1, ReplicationFactor: 1, ConfigEntries: entries}}})
	if err == nil {
		err = resp.Errors[topic]
	}
	if err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
}

func kafkaGoDescribe(t *testing.T, cl *kafka.Client, topic string) map[string]string {
	t.Helper()
	resp, err := cl.DescribeConfigs(testCtx(t), &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic}}})
	if err == nil && len(resp.Resources) != 1 {
		err = fmt.Errorf("%d resources described", len(resp.Resources))
	}
	if err == nil {
		err = resp.Resources[0].Error
	}
	if err != nil {
		t.Fatalf("DescribeConfigs: %v", err)
	}
	out := map[string]string{}
	for _, e := range resp.Resources[0].ConfigEntries {
		out[e.ConfigName] = e.ConfigValue
	}
	return out
}

// oauthBearer is SASL OAUTHBEARER (RFC 7628) for kafka-go, which has none
// built in: the client's first message carries the token; a broker that
// refuses it answers with an error challenge.
type oauthBearer func() string

func (oauthBearer) Name() string { return "OAUTHBEARER" }

func (f oauthBearer) Start(context.Context) (sasl.StateMachine, []byte, error) {
	return f, []byte("n,,\x01auth=Bearer " + f() + "\x01\x01"), nil
}

func (oauthBearer) Next(_ context.Context, challenge []byte) (bool, []byte, error) {
	if len(challenge) > 0 {
		return false, nil, fmt.Errorf("OAUTHBEARER refused: %s", challenge)
	}
	return true, nil, nil
}
