package broker

import (
	"fmt"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// consume reads n records from the start of topic.
func consume(t *testing.T, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	ctx := testCtx(t)
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(got), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		got = append(got, fs.Records()...)
	}
	return got
}

func TestFranzProduceAndConsumeFromStart(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "orders", 3)
	ctx := testCtx(t)
	prod := tb.client(t, writerKey, kgo.DefaultProduceTopic("orders"))
	const n = 100
	for i := range n {
		r := &kgo.Record{Key: []byte(fmt.Sprint(i % 7)), Value: []byte(fmt.Sprintf("order-%d", i))}
		prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cons := tb.client(t, readerKey, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := consume(t, cons, n)
	seen := map[string]bool{}
	for _, r := range got {
		seen[string(r.Value)] = true
	}
	if len(got) != n || len(seen) != n {
		t.Fatalf("got %d records (%d distinct), want %d", len(got), len(seen), n)
	}
}

func TestRefusedLoginSaysWhy(t *testing.T) {
	tb := startBroker(t, nil)
	cl := tb.client(t, "not-a-key")
	err := cl.Ping(testCtx(t))
	if err == nil {
		t.Fatal("login with a wrong key succeeded")
	}
	if !strings.Contains(err.Error(), "the API key is not valid") {
		t.Fatalf("error %q does not carry the authenticator's reason", err)
	}
}

func TestReaderCannotProduce(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "orders", 1)
	cl := tb.client(t, readerKey, kgo.DefaultProduceTopic("orders"), kgo.DisableIdempotentWrite())
	err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("x")}).FirstErr()
	if err != kerr.TopicAuthorizationFailed {
		t.Fatalf("produce as reader: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
}
