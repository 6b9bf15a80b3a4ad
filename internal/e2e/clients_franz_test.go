package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
)

// franzMatrix is franz-go's row of the client matrix: kgo and kadm.
var franzMatrix = clientMatrixCase{
	cellCreateCompacted: func(t *testing.T, m *matrix, topic string) {
		adm := kadm.NewClient(franz(t, m.manager))
		franzCreateCompacted(t, adm, topic)
		checkTopicConfigs(t, franzDescribe(t, adm, topic), matrixTopicConfigs)
	},
	cellConfigs: func(t *testing.T, m *matrix, topic string) {
		adm := kadm.NewClient(franz(t, m.manager))
		franzCreateCompacted(t, adm, topic)
		// Incremental: only retention.ms changes.
		resp, err := adm.AlterTopicConfigs(testCtx(t), []kadm.AlterConfig{{Op: kadm.SetConfig, Name: "retention.ms", Value: &matrixRetention}}, topic)
		if err == nil {
			_, err = resp.On(topic, nil)
		}
		if err != nil {
			t.Fatalf("IncrementalAlterConfigs: %v", err)
		}
		checkTopicConfigs(t, franzDescribe(t, adm, topic), withRetention())
		// Non-incremental: the whole set is replaced.
		resp, err = adm.AlterTopicConfigsState(testCtx(t), []kadm.AlterConfig{{Name: "cleanup.policy", Value: ptr("delete")}}, topic)
		if err == nil {
			_, err = resp.On(topic, nil)
		}
		if err != nil {
			t.Fatalf("AlterConfigs: %v", err)
		}
		checkTopicConfigs(t, franzDescribe(t, adm, topic), map[string]string{"cleanup.policy": "delete", "retention.ms": "604800000"})
	},
	cellTransactions: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 1)
		prod := franz(t, m.manager, kgo.TransactionalID(topic), kgo.DefaultProduceTopic(topic))
		ctx := testCtx(t)
		for i, v := range []string{"committed-1", "committed-2", "aborted-1", "committed-3"} {
			if err := prod.BeginTransaction(); err != nil {
				t.Fatal(err)
			}
			if err := prod.ProduceSync(ctx, kgo.StringRecord(v)).FirstErr(); err != nil {
				t.Fatal(err)
			}
			end := kgo.TryCommit
			if i == 2 {
				end = kgo.TryAbort
			}
			if err := prod.EndTransaction(ctx, end); err != nil {
				t.Fatalf("end transaction %d: %v", i, err)
			}
		}
		cons := franz(t, m.manager, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		readCommittedMatches(t, recordValues(consumeRecords(t, cons, len(txnWant))))
	},
	cellOffsetsForTimes: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 1)
		produceOneBatch(t, m, batchRecords(topic))
		adm := kadm.NewClient(franz(t, m.manager))
		for _, q := range offsetQueries {
			listed, err := adm.ListOffsetsAfterMilli(testCtx(t), q.at.UnixMilli(), topic)
			if err == nil {
				err = listed.Error()
			}
			if err != nil {
				t.Fatal(err)
			}
			if o, _ := listed.Lookup(topic, 0); o.Offset != q.want {
				t.Errorf("offset for %v: %d, want %d", q.at, o.Offset, q.want)
			}
		}
	},
	cellDeleteGroup: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 2)
		adm := kadm.NewClient(franz(t, m.manager))
		ctx := testCtx(t)
		var offs kadm.Offsets
		offs.AddOffset(topic, 0, 5, -1)
		offs.AddOffset(topic, 1, 7, -1)
		if err := adm.CommitAllOffsets(ctx, topic, offs); err != nil {
			t.Fatalf("commit offsets: %v", err)
		}
		dresp, err := adm.DeleteOffsets(ctx, topic, kadm.TopicsSet{topic: {0: {}}})
		if err == nil {
			err = dresp.Error()
		}
		if err != nil {
			t.Fatalf("OffsetDelete: %v", err)
		}
		fetched, err := adm.FetchOffsets(ctx, topic)
		if err == nil {
			err = fetched.Error()
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := fetched.Lookup(topic, 0); ok {
			t.Errorf("partition 0's offset is still committed after OffsetDelete")
		}
		if o, _ := fetched.Lookup(topic, 1); o.At != 7 {
			t.Errorf("partition 1's offset is %d, want 7", o.At)
		}
		gresp, err := adm.DeleteGroup(ctx, topic)
		if err == nil {
			err = gresp.Err
		}
		if err != nil {
			t.Fatalf("DeleteGroups: %v", err)
		}
		groups, err := adm.ListGroups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := groups[topic]; ok {
			t.Fatalf("group %s is still listed after DeleteGroups", topic)
		}
	},
	cellOAuthBearer: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 1)
		cl := franzOAuth(t, m, func() string { return m.token(t) }, kgo.DefaultProduceTopic(topic), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		produceValues(t, cl, topic, []string{"over-oauthbearer"})
		if got := recordValues(consumeRecords(t, cl, 1)); got[0] != "over-oauthbearer" {
			t.Fatalf("read %q", got)
		}
		bad := franzOAuth(t, m, func() string { return "not-an-iam-token" })
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := bad.Ping(ctx); err == nil {
			t.Fatal(errNotRefused)
		}
	},
}

func franzCreateCompacted(t *testing.T, adm *kadm.Client, topic string) {
	t.Helper()
	configs := map[string]*string{}
	for k, v := range matrixTopicConfigs {
		configs[k] = ptr(v)
	}
	resp, err := adm.CreateTopic(testCtx(t), 1, 1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("CreateTopics: %v", err)
	}
}

func franzDescribe(t *testing.T, adm *kadm.Client, topic string) map[string]string {
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
		t.Fatalf("DescribeConfigs: %v", err)
	}
	out := map[string]string{}
	for _, c := range rc.Configs {
		out[c.Key] = c.MaybeValue()
	}
	return out
}

// franzOAuth is a franz-go client logging in over OAUTHBEARER with token's
// tokens.
func franzOAuth(t *testing.T, m *matrix, token func() string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(m.manager.Brokers...), kgo.RetryTimeout(10 * time.Second),
		kgo.SASL(oauth.Oauth(func(context.Context) (oauth.Auth, error) { return oauth.Auth{Token: token()}, nil }))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}
