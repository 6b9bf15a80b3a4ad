package objlog_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/keyline/keyline/internal/streams/broker"
	"github.com/keyline/keyline/internal/streams/objlog"
)

// Names and values a scan of the bucket and the database must not find.
const (
	canaryTopic = "canary-topic-7f3a9c"
	canaryGroup = "canary-group-51d2e8"
	canaryValue = "canary-value-c0ffee"
)

// serve runs a broker over st until the returned stop is called (or the
// test ends).
func serve(t *testing.T, st *objlog.Store) (addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{NodeID: 1, Listener: ln, Storage: broker.StorageOf(st), RetentionInterval: time.Hour,
		Authenticate: func(context.Context, string, string) (broker.Access, error) { return broker.Manager, nil }})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); b.Serve(context.Background()) }()
	var once sync.Once
	stop = func() { once.Do(func() { b.Close(); <-served }) }
	t.Cleanup(stop)
	return ln.Addr().String(), stop
}

func client(t *testing.T, addr string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(addr), kgo.SASL(plain.Auth{User: "token", Pass: "key"}.AsMechanism()),
		kgo.FetchMaxWait(500 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// consumeValues reads n records from the start of canaryTopic.
func consumeValues(t *testing.T, addr string, n int, opts ...kgo.Opt) map[string]int {
	t.Helper()
	ctx := testCtx(t)
	cl := client(t, addr, append([]kgo.Opt{kgo.ConsumeTopics(canaryTopic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())}, opts...)...)
	got := map[string]int{}
	total := 0
	for total < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", total, n, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		for _, r := range fs.Records() {
			got[string(r.Value)]++
			total++
		}
	}
	if err := cl.CommitUncommittedOffsets(ctx); err != nil && len(opts) > 0 {
		t.Fatal(err)
	}
	return got
}

func TestKafkaClientsOverObjectStorageLeaveNoPlainDataAndSurviveRestart(t *testing.T) {
	e := newEnv(t)
	st := e.mustOpen(t)
	addr, stop := serve(t, st)
	ctx := testCtx(t)
	adm := kadm.NewClient(client(t, addr))
	if _, err := adm.CreateTopic(ctx, 3, 1, nil, canaryTopic); err != nil {
		t.Fatal(err)
	}
	prod := client(t, addr, kgo.DefaultProduceTopic(canaryTopic), kgo.ProducerLinger(2*time.Millisecond))
	const n = 600
	for i := range n {
		prod.Produce(ctx, &kgo.Record{Key: fmt.Appendf(nil, "%d", i%5), Value: fmt.Appendf(nil, "%s-%d", canaryValue, i)}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got := consumeValues(t, addr, n, kgo.ConsumerGroup(canaryGroup), kgo.DisableAutoCommit())
	if len(got) != n {
		t.Fatalf("consumed %d distinct values, want %d", len(got), n)
	}
	offsets, err := adm.FetchOffsets(ctx, canaryGroup)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.objects(t)) == 0 {
		t.Fatal("no object in the bucket")
	}
	stored := e.stored(t)
	for _, canary := range []string{canaryTopic, canaryGroup, canaryValue} {
		if bytes.Contains(stored, []byte(canary)) {
			t.Errorf("%q is stored in plain form in the bucket or the database", canary)
		}
	}

	// A new broker on the same bucket and database serves it all.
	stop()
	st.Close()
	st2 := e.mustOpen(t)
	addr2, _ := serve(t, st2)
	if again := consumeValues(t, addr2, n); len(again) != n {
		t.Fatalf("after a restart: consumed %d distinct values, want %d", len(again), n)
	}
	adm2 := kadm.NewClient(client(t, addr2))
	offsets2, err := adm2.FetchOffsets(ctx, canaryGroup)
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	offsets2.Each(func(o kadm.OffsetResponse) {
		committed += o.At
		if want, _ := offsets.Lookup(o.Topic, o.Partition); want.At != o.At {
			t.Errorf("%s/%d: committed %d after the restart, %d before", o.Topic, o.Partition, o.At, want.At)
		}
	})
	if committed != n {
		t.Fatalf("the group's committed offsets add up to %d, want %d", committed, n)
	}
}

func TestProduceIsAcknowledgedOnlyOnceStoredAndNothingAcknowledgedIsLost(t *testing.T) {
	e := newEnv(t)
	st := e.mustOpen(t, func(o *objlog.Options) { o.RequestTimeout = time.Second })
	addr, _ := serve(t, st)
	ctx := testCtx(t)
	adm := kadm.NewClient(client(t, addr))
	if _, err := adm.CreateTopic(ctx, 2, 1, nil, canaryTopic); err != nil {
		t.Fatal(err)
	}
	prod := client(t, addr, kgo.DefaultProduceTopic(canaryTopic), kgo.RecordRetries(1<<30))
	var mu sync.Mutex
	acked := map[string]bool{}
	produce := func(ctx context.Context, v string) error {
		err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr()
		if err == nil {
			mu.Lock()
			acked[v] = true
			mu.Unlock()
		}
		return err
	}
	for i := range 20 {
		if err := produce(ctx, fmt.Sprintf("before-%d", i)); err != nil {
			t.Fatal(err)
		}
	}

	e.proxy.cut()
	// While the object store is unreachable nothing is acknowledged: the
	// broker drops the connection unanswered and the producer retries.
	var during sync.WaitGroup
	for i := range 10 {
		v := fmt.Sprintf("during-%d", i)
		during.Add(1)
		prod.Produce(ctx, &kgo.Record{Value: []byte(v)}, func(_ *kgo.Record, err error) {
			defer during.Done()
			if err != nil {
				t.Errorf("produce %s: %v", v, err)
				return
			}
			mu.Lock()
			acked[v] = true
			mu.Unlock()
		})
	}
	time.Sleep(3 * time.Second) // several flush attempts and request timeouts
	mu.Lock()
	for v := range acked {
		if strings.HasPrefix(v, "during-") {
			t.Errorf("%s was acknowledged while the object store was down", v)
		}
	}
	mu.Unlock()
	e.proxy.restore()
	// The retries land once it is back.
	during.Wait()
	for i := range 20 {
		if err := produce(ctx, fmt.Sprintf("after-%d", i)); err != nil {
			t.Fatalf("produce once the object store is back: %v", err)
		}
	}
	// Every acknowledged record is there, once: the producer is
	// idempotent, and its retries of batches whose flush failed at first
	// are recognised as duplicates.
	mu.Lock()
	defer mu.Unlock()
	want := len(acked)
	if want != 50 {
		t.Fatalf("%d records acknowledged, want 50", want)
	}
	got := consumeValues(t, addr, want)
	for v := range acked {
		if got[v] != 1 {
			t.Errorf("acknowledged record %q read %d times", v, got[v])
		}
	}
}
