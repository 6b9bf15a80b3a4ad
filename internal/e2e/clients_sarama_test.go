package e2e

import (
	"errors"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

// saramaMatrix is IBM/sarama's row of the client matrix: ClusterAdmin, the
// transactional SyncProducer, Client.GetOffset, OffsetManager and the
// OAUTHBEARER AccessTokenProvider.
var saramaMatrix = clientMatrixCase{
	cellCreateCompacted: func(t *testing.T, m *matrix, topic string) {
		adm := saramaAdmin(t, saramaConfig(m.manager), m.manager.Brokers)
		saramaCreateCompacted(t, adm, topic)
		checkTopicConfigs(t, saramaDescribe(t, adm, topic), matrixTopicConfigs)
	},
	cellConfigs: func(t *testing.T, m *matrix, topic string) {
		adm := saramaAdmin(t, saramaConfig(m.manager), m.manager.Brokers)
		saramaCreateCompacted(t, adm, topic)
		err := adm.IncrementalAlterConfig(sarama.TopicResource, topic, map[string]sarama.IncrementalAlterConfigsEntry{
			"retention.ms": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &matrixRetention}}, false)
		if err != nil {
			t.Fatalf("IncrementalAlterConfigs: %v", err)
		}
		checkTopicConfigs(t, saramaDescribe(t, adm, topic), withRetention())
		if err := adm.AlterConfig(sarama.TopicResource, topic, map[string]*string{"cleanup.policy": ptr("delete")}, false); err != nil {
			t.Fatalf("AlterConfigs: %v", err)
		}
		checkTopicConfigs(t, saramaDescribe(t, adm, topic), map[string]string{"cleanup.policy": "delete", "retention.ms": "604800000"})
	},
	cellTransactions: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 1)
		cfg := saramaConfig(m.manager)
		cfg.Producer.Idempotent, cfg.Net.MaxOpenRequests = true, 1
		cfg.Producer.Transaction.ID = topic
		prod := saramaProducer(t, m, cfg)
		for i, v := range []string{"committed-1", "committed-2", "aborted-1", "committed-3"} {
			if err := prod.BeginTxn(); err != nil {
				t.Fatal(err)
			}
			if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder(v)}); err != nil {
				t.Fatal(err)
			}
			end := prod.CommitTxn
			if i == 2 {
				end = prod.AbortTxn
			}
			if err := end(); err != nil {
				t.Fatalf("end transaction %d: %v", i, err)
			}
		}
		ccfg := saramaConfig(m.manager)
		ccfg.Consumer.IsolationLevel = sarama.ReadCommitted
		readCommittedMatches(t, saramaRead(t, m, ccfg, topic, len(txnWant)))
	},
	cellOffsetsForTimes: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 1)
		cfg := saramaConfig(m.manager)
		// The producer waits for all three records: one batch.
		cfg.Producer.Flush.Messages, cfg.Producer.Flush.Frequency = 3, 30*time.Second
		prod := saramaProducer(t, m, cfg)
		var msgs []*sarama.ProducerMessage
		for _, r := range batchRecords(topic) {
			msgs = append(msgs, &sarama.ProducerMessage{Topic: topic, Value: sarama.ByteEncoder(r.Value), Timestamp: r.Timestamp})
		}
		if err := prod.SendMessages(msgs); err != nil {
			t.Fatal(err)
		}
		cl := saramaClient(t, m, cfg)
		for _, q := range offsetQueries {
			o, err := cl.GetOffset(topic, 0, q.at.UnixMilli())
			if err != nil {
				t.Fatal(err)
			}
			if o != q.want {
				t.Errorf("offset for %v: %d, want %d", q.at, o, q.want)
			}
		}
	},
	cellDeleteGroup: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 2)
		cfg := saramaConfig(m.manager)
		cl := saramaClient(t, m, cfg)
		om, err := sarama.NewOffsetManagerFromClient(topic, cl)
		if err != nil {
			t.Fatal(err)
		}
		for p, o := range map[int32]int64{0: 5, 1: 7} {
			pom, err := om.ManagePartition(topic, p)
			if err != nil {
				t.Fatal(err)
			}
			pom.MarkOffset(o, "")
			defer pom.AsyncClose()
		}
		om.Commit()
		adm := saramaAdmin(t, cfg, m.manager.Brokers)
		waitFor(t, 30*time.Second, "sarama's offset manager to commit", func() bool {
			return saramaCommitted(t, adm, topic, 1) == 7
		})
		if err := om.Close(); err != nil {
			t.Fatal(err)
		}
		if err := adm.DeleteConsumerGroupOffset(topic, topic, 0); err != nil {
			t.Fatalf("OffsetDelete: %v", err)
		}
		if o := saramaCommitted(t, adm, topic, 0); o != -1 {
			t.Errorf("partition 0's offset is %d after OffsetDelete, want none (-1)", o)
		}
		if o := saramaCommitted(t, adm, topic, 1); o != 7 {
			t.Errorf("partition 1's offset is %d, want 7", o)
		}
		if err := adm.DeleteConsumerGroup(topic); err != nil {
			t.Fatalf("DeleteGroups: %v", err)
		}
		groups, err := adm.ListConsumerGroups()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := groups[topic]; ok {
			t.Fatalf("group %s is still listed after DeleteGroups", topic)
		}
	},
	cellOAuthBearer: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 1)
		cfg := saramaConfig(kafkaCreds{})
		cfg.Net.SASL.Mechanism = sarama.SASLTypeOAuth
		cfg.Net.SASL.TokenProvider = saramaTokens(func() (string, error) { return m.token(t), nil })
		prod := saramaProducer(t, m, cfg)
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: topic, Value: sarama.StringEncoder("over-oauthbearer")}); err != nil {
			t.Fatal(err)
		}
		if got := saramaRead(t, m, cfg, topic, 1); got[0] != "over-oauthbearer" {
			t.Fatalf("read %q", got)
		}
		bad := saramaConfig(kafkaCreds{})
		bad.Net.SASL.Mechanism = sarama.SASLTypeOAuth
		bad.Net.SASL.TokenProvider = saramaTokens(func() (string, error) { return "not-an-iam-token", nil })
		bad.Metadata.Retry.Max = 0
		if cl, err := sarama.NewClient(m.manager.Brokers, bad); err == nil {
			cl.Close()
			t.Fatal(errNotRefused)
		}
	},
}

func saramaProducer(t *testing.T, m *matrix, cfg *sarama.Config) sarama.SyncProducer {
	t.Helper()
	prod, err := sarama.NewSyncProducer(m.manager.Brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { prod.Close() })
	return prod
}

func saramaClient(t *testing.T, m *matrix, cfg *sarama.Config) sarama.Client {
	t.Helper()
	cl, err := sarama.NewClient(m.manager.Brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// saramaTokens is an OAUTHBEARER AccessTokenProvider.
type saramaTokens func() (string, error)

func (f saramaTokens) Token() (*sarama.AccessToken, error) {
	tok, err := f()
	return &sarama.AccessToken{Token: tok}, err
}

func saramaAdmin(t *testing.T, cfg *sarama.Config, brokers []string) sarama.ClusterAdmin {
	t.Helper()
	adm, err := sarama.NewClusterAdmin(brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { adm.Close() })
	return adm
}

func saramaCreateCompacted(t *testing.T, adm sarama.ClusterAdmin, topic string) {
	t.Helper()
	entries := map[string]*string{}
	for k, v := range matrixTopicConfigs {
		entries[k] = ptr(v)
	}
	if err := adm.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1, ConfigEntries: entries}, false); err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
}

func saramaDescribe(t *testing.T, adm sarama.ClusterAdmin, topic string) map[string]string {
	t.Helper()
	entries, err := adm.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
	if err != nil {
		t.Fatalf("DescribeConfigs: %v", err)
	}
	out := map[string]string{}
	for _, e := range entries {
		out[e.Name] = e.Value
	}
	return out
}

// saramaCommitted is group's committed offset on topic's partition p, -1
// for none.
func saramaCommitted(t *testing.T, adm sarama.ClusterAdmin, group string, p int32) int64 {
	t.Helper()
	resp, err := adm.ListConsumerGroupOffsets(group, map[string][]int32{group: {p}})
	if err != nil {
		t.Fatal(err)
	}
	b := resp.GetBlock(group, p)
	if b == nil {
		return -1
	}
	if !errors.Is(b.Err, sarama.ErrNoError) {
		t.Fatal(b.Err)
	}
	return b.Offset
}

// saramaRead reads n values of topic's partition 0 from its start.
func saramaRead(t *testing.T, m *matrix, cfg *sarama.Config, topic string, n int) []string {
	t.Helper()
	cons, err := sarama.NewConsumer(m.manager.Brokers, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	pc, err := cons.ConsumePartition(topic, 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	var got []string
	deadline := time.After(60 * time.Second)
	for len(got) < n {
		select {
		case msg := <-pc.Messages():
			got = append(got, string(msg.Value))
		case err := <-pc.Errors():
			t.Fatal(err)
		case <-deadline:
			t.Fatalf("read %d of %d records: %q", len(got), n, got)
		}
	}
	return got
}
