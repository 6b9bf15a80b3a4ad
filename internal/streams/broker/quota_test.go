package broker

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// quotaLogins are test API keys of distinct principals, as IAM service IDs
// are: the quotas of one must not touch the others.
var quotaLogins = map[string]Login{
	managerKey: {Access: Manager, Principal: "iam-ServiceId-admin"},
	"hog-key":  {Access: Writer, Principal: "iam-ServiceId-hog"},
	"calm-key": {Access: Writer, Principal: "iam-ServiceId-calm"},
	writerKey:  {Access: Writer, Principal: "iam-ServiceId-writer"},
	readerKey:  {Access: Reader, Principal: "iam-ServiceId-reader"},
}

func withQuotaLogins(c *Config) {
	c.Login = func(_ context.Context, cr Credentials) (Login, error) {
		if l, ok := quotaLogins[cr.Secret]; ok && cr.User == "token" {
			return l, nil
		}
		return Login{}, errors.New("the API key is not valid")
	}
}

// throttles counts the throttles a client was told of.
type throttles struct{ n atomic.Int64 }

func (h *throttles) OnBrokerThrottle(_ kgo.BrokerMetadata, d time.Duration, _ bool) {
	if d > 0 {
		h.n.Add(1)
	}
}

func user(name string) kadm.ClientQuotaEntity {
	return kadm.ClientQuotaEntity{{Type: "user", Name: &name}}
}

func TestConsumerOverItsByteRateIsThrottled(t *testing.T) {
	tb := startBroker(t, nil, withQuotaLogins)
	tb.mustCreate(t, "bulk", 1)
	// 8 MiB in 16 KiB batches, so that a small fetch returns little.
	prod := tb.client(t, writerKey, kgo.DefaultProduceTopic("bulk"), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.ProducerBatchMaxBytes(20<<10), kgo.ProducerLinger(0))
	const records, size = 512, 16 << 10
	var wg sync.WaitGroup
	for range records {
		wg.Add(1)
		prod.Produce(testCtx(t), &kgo.Record{Value: make([]byte, size)}, func(_ *kgo.Record, err error) {
			defer wg.Done()
			if err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	const quota = 256 << 10
	res, err := tb.admin(t, managerKey).AlterClientQuotas(testCtx(t), []kadm.AlterClientQuotaEntry{{
		Entity: user("iam-ServiceId-hog"), Ops: []kadm.AlterClientQuotaOp{{Key: "consumer_byte_rate", Value: quota}}}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("setting the quota: %v %+v", err, res)
	}

	consumer := func(key string, h *throttles) *kgo.Client {
		return tb.client(t, key, kgo.ConsumeTopics("bulk"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
			kgo.FetchMaxBytes(32<<10), kgo.FetchMaxPartitionBytes(32<<10), kgo.WithHooks(h))
	}
	// Another user reads everything and is never throttled.
	var calmThrottles throttles
	calm := consumer("calm-key", &calmThrottles)
	if got := len(consume(t, calm, records)); got != records {
		t.Fatalf("the other user read %d records, want %d", got, records)
	}
	if n := calmThrottles.n.Load(); n != 0 {
		t.Fatalf("a user without a quota was throttled %d times", n)
	}

	// The user over its quota is told to wait and, over ten seconds,
	// reads about the quota's worth: all of it at once, as Kafka's
	// window (11 samples of 1 s, the current one not full) allows, then
	// little more until the first sample leaves the window.
	var hogThrottles throttles
	hog := consumer("hog-key", &hogThrottles)
	var read int64
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		hog.PollFetches(ctx).EachRecord(func(r *kgo.Record) { read += int64(len(r.Value)) })
		cancel()
	}
	rate := float64(read) / time.Since(start).Seconds()
	t.Logf("throttled %d times; read %d bytes, %.0f bytes/s, quota %d", hogThrottles.n.Load(), read, rate, quota)
	if hogThrottles.n.Load() == 0 {
		t.Fatal("the user over its quota was never throttled")
	}
	if rate > 2*quota {
		t.Fatalf("read %.0f bytes/s over its quota of %d", rate, quota)
	}
	if read < 5*quota {
		t.Fatalf("read %d bytes in a window allowing %d", read, 10*quota)
	}
}

func TestProducerOverItsByteRateIsThrottled(t *testing.T) {
	tb := startBroker(t, nil, withQuotaLogins)
	tb.mustCreate(t, "in", 1)
	res, err := tb.admin(t, managerKey).AlterClientQuotas(testCtx(t), []kadm.AlterClientQuotaEntry{{
		Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: strp("loader")}}, Ops: []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: 64 << 10}}}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("setting the quota: %v %+v", err, res)
	}
	if !produceUntilThrottled(t, tb, 200, kgo.ClientID("loader")) {
		t.Fatal("a producer over its client id's quota was never throttled")
	}
}

// produceUntilThrottled produces 32 KiB records to "in" as the hog-key's
// user, one at a time, until the broker throttles it or tries run out.
func produceUntilThrottled(t *testing.T, tb testBroker, tries int, opts ...kgo.Opt) bool {
	var h throttles
	prod := tb.client(t, "hog-key", append(opts, kgo.DefaultProduceTopic("in"), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.WithHooks(&h))...)
	for range tries {
		if err := prod.ProduceSync(testCtx(t), &kgo.Record{Value: make([]byte, 32<<10)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		if h.n.Load() > 0 {
			return true
		}
	}
	return false
}

func TestClientQuotasAlterAndDescribe(t *testing.T) {
	tb := startBroker(t, nil, withQuotaLogins)
	adm := tb.admin(t, managerKey)
	ctx := testCtx(t)
	ops := func(kv ...any) []kadm.AlterClientQuotaOp {
		var o []kadm.AlterClientQuotaOp
		for i := 0; i < len(kv); i += 2 {
			o = append(o, kadm.AlterClientQuotaOp{Key: kv[i].(string), Value: kv[i+1].(float64)})
		}
		return o
	}
	res, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{
		{Entity: user("iam-ServiceId-hog"), Ops: ops("consumer_byte_rate", 1048576.0, "producer_byte_rate", 524288.0)},
		{Entity: kadm.ClientQuotaEntity{{Type: "user"}}, Ops: ops("consumer_byte_rate", 2097152.0)},
		{Entity: kadm.ClientQuotaEntity{{Type: "user", Name: strp("iam-ServiceId-hog")}, {Type: "client-id"}}, Ops: ops("producer_byte_rate", 1000.0)},
		{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: strp("loader")}}, Ops: ops("producer_byte_rate", 4096.0)},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("%s: %v %s", r.Entity, r.Err, r.ErrMessage)
		}
	}

	describe := func(strict bool, comps ...kadm.DescribeClientQuotaComponent) string {
		t.Helper()
		got, err := adm.DescribeClientQuotas(ctx, strict, comps)
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(got)
	}
	hog := kadm.DescribeClientQuotaComponent{Type: "user", MatchName: strp("iam-ServiceId-hog"), MatchType: kadm.QuotasMatchType(0)}
	for _, tt := range []struct {
		name   string
		strict bool
		comps  []kadm.DescribeClientQuotaComponent
		want   string
	}{
		{"exact user, strict", true, []kadm.DescribeClientQuotaComponent{hog},
			"[{{user=iam-ServiceId-hog} [consumer_byte_rate=1048576.000000 producer_byte_rate=524288.000000]}]"},
		{"exact user", false, []kadm.DescribeClientQuotaComponent{hog},
			"[{{user=iam-ServiceId-hog} [consumer_byte_rate=1048576.000000 producer_byte_rate=524288.000000]} {{user=iam-ServiceId-hog, client-id=<default>} [producer_byte_rate=1000.000000]}]"},
		{"default user", true, []kadm.DescribeClientQuotaComponent{{Type: "user", MatchType: 1}},
			"[{{user=<default>} [consumer_byte_rate=2097152.000000]}]"},
		{"any client id", false, []kadm.DescribeClientQuotaComponent{{Type: "client-id", MatchType: 2}},
			"[{{client-id=loader} [producer_byte_rate=4096.000000]} {{user=iam-ServiceId-hog, client-id=<default>} [producer_byte_rate=1000.000000]}]"},
	} {
		if got := describe(tt.strict, tt.comps...); got != tt.want {
			t.Errorf("%s:\n got %s\nwant %s", tt.name, got, tt.want)
		}
	}

	// Removing every value removes the entity.
	if res, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{Entity: kadm.ClientQuotaEntity{{Type: "client-id", Name: strp("loader")}},
		Ops: []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Remove: true}}}}); err != nil || res[0].Err != nil {
		t.Fatalf("removing: %v %+v", err, res)
	}
	if got := describe(true, kadm.DescribeClientQuotaComponent{Type: "client-id", MatchType: 2}); got != "[]" {
		t.Fatalf("after removing: %s", got)
	}

	// Kafka's validation, entry by entry; validate-only changes nothing.
	for _, tt := range []struct {
		name   string
		entry  kadm.AlterClientQuotaEntry
		reason string
	}{
		{"zero", kadm.AlterClientQuotaEntry{Entity: user("a"), Ops: ops("producer_byte_rate", 0.0)}, "Quota producer_byte_rate must be greater than 0"},
		{"fraction", kadm.AlterClientQuotaEntry{Entity: user("a"), Ops: ops("consumer_byte_rate", 1.5)}, "Proposed value for consumer_byte_rate is not an integral value."},
		{"unknown key", kadm.AlterClientQuotaEntry{Entity: user("a"), Ops: ops("bytes_per_fortnight", 10.0)}, "Invalid configuration key bytes_per_fortnight"},
		{"unsupported key", kadm.AlterClientQuotaEntry{Entity: user("a"), Ops: ops("request_percentage", 10.0)}, "quota request_percentage is not supported by this broker; producer_byte_rate and consumer_byte_rate are"},
		{"empty entity", kadm.AlterClientQuotaEntry{Ops: ops("producer_byte_rate", 10.0)}, "Invalid empty client quota entity"},
		{"empty name", kadm.AlterClientQuotaEntry{Entity: user(""), Ops: ops("producer_byte_rate", 10.0)}, "Empty user not supported"},
		{"unknown type", kadm.AlterClientQuotaEntry{Entity: kadm.ClientQuotaEntity{{Type: "group", Name: strp("g")}}, Ops: ops("producer_byte_rate", 10.0)}, "Unhandled client quota entity type: group"},
		{"duplicate type", kadm.AlterClientQuotaEntry{Entity: append(user("a"), user("b")...), Ops: ops("producer_byte_rate", 10.0)}, "Duplicate user in client quota entity"},
	} {
		for _, validate := range []bool{true, false} {
			alter := adm.AlterClientQuotas
			if validate {
				alter = adm.ValidateAlterClientQuotas
			}
			res, err := alter(ctx, []kadm.AlterClientQuotaEntry{tt.entry, {Entity: user("valid"), Ops: ops("producer_byte_rate", 10.0)}})
			if err != nil {
				t.Fatal(err)
			}
			if !errors.Is(res[0].Err, kerr.InvalidRequest) || res[0].ErrMessage != tt.reason {
				t.Errorf("%s: %v %q, want INVALID_REQUEST %q", tt.name, res[0].Err, res[0].ErrMessage, tt.reason)
			}
			if res[1].Err != nil {
				t.Errorf("%s: the valid entry next to it failed: %v", tt.name, res[1].Err)
			}
		}
	}
	if got := describe(true, kadm.DescribeClientQuotaComponent{Type: "user", MatchName: strp("a")}); got != "[]" {
		t.Fatalf("an invalid entry was stored: %s", got)
	}
	if _, err := adm.DescribeClientQuotas(ctx, false, []kadm.DescribeClientQuotaComponent{{Type: "group", MatchType: 2}}); !errors.Is(err, kerr.InvalidRequest) {
		t.Fatalf("describing an unknown entity type: %v", err)
	}

	// Altering takes the Manager role on the cluster; describing, the
	// Reader role there (which every login has).
	for _, key := range []string{writerKey, readerKey} {
		res, err := tb.admin(t, key).AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{Entity: user(key), Ops: ops("consumer_byte_rate", 10.0)}})
		if err != nil {
			t.Fatal(err)
		}
		if !errors.Is(res[0].Err, kerr.ClusterAuthorizationFailed) {
			t.Fatalf("%s altered a quota: %v", key, res[0].Err)
		}
	}
	if _, err := tb.admin(t, readerKey).DescribeClientQuotas(ctx, false, nil); err != nil {
		t.Fatalf("a reader of the cluster describing quotas: %v", err)
	}
}

func TestClientQuotasSurviveRestart(t *testing.T) {
	store := newMemStore()
	tb := startBroker(t, store, withQuotaLogins)
	tb.mustCreate(t, "in", 1)
	if res, err := tb.admin(t, managerKey).AlterClientQuotas(testCtx(t), []kadm.AlterClientQuotaEntry{{
		Entity: user("iam-ServiceId-hog"), Ops: []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: 1024}}}}); err != nil || res[0].Err != nil {
		t.Fatalf("setting the quota: %v %+v", err, res)
	}
	tb.Close()

	again := startBroker(t, store, withQuotaLogins)
	got, err := again.admin(t, readerKey).DescribeClientQuotas(testCtx(t), true, []kadm.DescribeClientQuotaComponent{{Type: "user", MatchType: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[{{user=iam-ServiceId-hog} [producer_byte_rate=1024.000000]}]" {
		t.Fatalf("after a restart: %v", got)
	}
	// And it is enforced: a 32 KiB produce is 32 times the quota.
	if !produceUntilThrottled(t, again, 20) {
		t.Fatal("the restored quota is not enforced")
	}
}

// Quota changes reach the Activity Tracker, refusals too; validate-only
// requests do not.
func TestClientQuotaChangesAreRecorded(t *testing.T) {
	log := &changeLog{}
	tb := startBroker(t, nil, withQuotaLogins, func(c *Config) { c.Audit = log.record })
	entry := []kadm.AlterClientQuotaEntry{{Entity: kadm.ClientQuotaEntity{{Type: "user", Name: strp("iam-ServiceId-hog")}, {Type: "client-id"}},
		Ops: []kadm.AlterClientQuotaOp{{Key: "consumer_byte_rate", Value: 1 << 20}}}}
	if _, err := tb.admin(t, managerKey).ValidateAlterClientQuotas(testCtx(t), entry); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{managerKey, writerKey} {
		if _, err := tb.admin(t, key).AlterClientQuotas(testCtx(t), entry); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"quota.update user=iam-ServiceId-hog,client-id=<default> 200 token", "quota.update user=iam-ServiceId-hog,client-id=<default> 403 token"}
	if got := log.summary(); !slices.Equal(got, want) {
		t.Fatalf("recorded %q, want %q", got, want)
	}
}

// Connections of one user fetching at once share its allowance: together
// they read about what the quota allows over the window, not each of them
// all of it.
func TestFetchesOfOneUserShareTheAllowance(t *testing.T) {
	tb := startBroker(t, nil, withQuotaLogins)
	tb.mustCreate(t, "bulk", 1)
	prod := tb.client(t, writerKey, kgo.DefaultProduceTopic("bulk"), kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.ProducerBatchMaxBytes(80<<10))
	const batch = 64 << 10
	for range 128 { // 8 MiB
		prod.Produce(testCtx(t), &kgo.Record{Value: make([]byte, batch)}, nil)
	}
	if err := prod.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	adm := tb.admin(t, managerKey)
	const quota = 256 << 10 // the window allows ten to eleven times this
	if res, err := adm.AlterClientQuotas(testCtx(t), []kadm.AlterClientQuotaEntry{{
		Entity: user("iam-ServiceId-hog"), Ops: []kadm.AlterClientQuotaOp{{Key: "consumer_byte_rate", Value: quota}}}}); err != nil || res[0].Err != nil {
		t.Fatalf("setting the quota: %v %+v", err, res)
	}
	topics, err := adm.ListTopics(testCtx(t), "bulk")
	if err != nil {
		t.Fatal(err)
	}
	const fetchers = 6
	var read, largest atomic.Int64
	var wg sync.WaitGroup
	for range fetchers {
		cl := tb.client(t, "hog-key")
		wg.Go(func() {
			req := kmsg.NewPtrFetchRequest()
			req.MaxWaitMillis, req.MaxBytes = 100, 50<<20
			rt := kmsg.NewFetchRequestTopic()
			rt.Topic, rt.TopicID = "bulk", topics["bulk"].ID
			rp := kmsg.NewFetchRequestTopicPartition()
			rp.PartitionMaxBytes = 50 << 20
			rt.Partitions = append(rt.Partitions, rp)
			req.Topics = append(req.Topics, rt)
			resp, err := req.RequestWith(testCtx(t), cl)
			if err != nil {
				t.Error(err)
				return
			}
			var n int64
			for _, rt := range resp.Topics {
				for _, p := range rt.Partitions {
					n += int64(len(p.RecordBatches))
				}
			}
			read.Add(n)
			for l := largest.Load(); n > l && !largest.CompareAndSwap(l, n); l = largest.Load() {
			}
		})
	}
	wg.Wait()
	t.Logf("%d fetchers read %d bytes, at most %d in one fetch", fetchers, read.Load(), largest.Load())
	// The window is 10 to 11 s long in its first samples; each fetch may
	// read one batch past its share.
	if limit := int64(11*quota + fetchers*(batch+1024)); read.Load() > limit {
		t.Fatalf("%d fetchers of one user read %d bytes, over the window's %d", fetchers, read.Load(), limit)
	}
	// And one fetch reads at most a second of the quota (and a batch).
	if limit := int64(quota + batch + 1024); largest.Load() > limit {
		t.Fatalf("one fetch read %d bytes, over a second of the quota (%d)", largest.Load(), limit)
	}
}

// What one user's fetches read at once is at most a second of its quota,
// even in a fresh window that allows ten seconds of it, and over time they
// read at the quota: the next second's worth once a second has passed, not
// the rest of the window at once.
func TestFetchesAreReadAtMostASecondOfTheQuotaAtATime(t *testing.T) {
	const quota = 1 << 20
	q := &quotaBook{set: map[quotaEntity]map[string]float64{}, sensors: map[sensorKey]*rateSensor{}}
	q.defaults[fetchQuota] = quota
	now := time.Now()
	paceNow := now
	q.paceClock = func() time.Time { return paceNow }
	reserve := func(at time.Time) (int64, quotaHold, time.Duration) {
		paceNow = at
		return q.reserve("hog", "", 50<<20, func() int64 { return 50 << 20 }, at)
	}
	var holds []quotaHold
	var inFlight int64
	for range 10 {
		budget, held, throttle := reserve(now)
		if budget == 0 && throttle <= 0 {
			t.Fatal("nothing allowed and no throttle")
		}
		inFlight += budget
		holds = append(holds, held)
	}
	if inFlight != quota {
		t.Fatalf("10 fetches of a fresh user hold %d bytes at once, want a second of its %d B/s quota", inFlight, quota)
	}
	// Read and counted, the second's worth is spent: the next fetch waits
	// about a tenth of a second for the bucket to refill.
	q.record(fetchQuota, "hog", "", quota, holds[0], now)
	if budget, _, throttle := reserve(now); budget != 0 || throttle <= 0 || throttle > time.Second {
		t.Fatalf("right after a second's worth was read: budget %d, throttle %v; want none and a short throttle", budget, throttle)
	}
	if budget, _, _ := reserve(now.Add(500 * time.Millisecond)); budget != quota/2 {
		t.Fatalf("half a second later the next fetch may read %d, want half a second's worth (%d)", budget, quota/2)
	}
}
