package e2e

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/keyline/keyline/internal/client"
)

// transformSession is a consume-transform-produce exactly-once session:
// it reads "in" as group "eos" and writes each value, prefixed, to "out".
func transformSession(t *testing.T, c kafkaCreds) *kgo.GroupTransactSession {
	t.Helper()
	opts := []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.SASL(plain.Auth{User: c.User, Pass: c.APIKey}.AsMechanism()),
		kgo.RetryTimeout(10 * time.Second), kgo.TransactionalID("eos-transformer"), kgo.ConsumerGroup("eos"),
		kgo.ConsumeTopics("in"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.RequireStableFetchOffsets(), kgo.DefaultProduceTopic("out"), kgo.FetchMaxWait(500 * time.Millisecond)}
	if tc := c.tlsConfig(t); tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	sess, err := kgo.NewGroupTransactSession(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sess.Close)
	return sess
}

// transformLoop runs transactions until ctx ends, counting the commits.
func transformLoop(ctx context.Context, t *testing.T, sess *kgo.GroupTransactSession, commits *atomic.Int64) {
	for ctx.Err() == nil {
		if err := sess.Begin(); err != nil {
			t.Logf("begin: %v", err)
			return
		}
		// Small transactions, so that the kill lands inside one.
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		fs := sess.PollRecords(pctx, 40)
		cancel()
		for _, r := range fs.Records() {
			sess.Produce(ctx, &kgo.Record{Partition: r.Partition, Value: append([]byte("out-"), r.Value...)}, nil)
		}
		committed, err := sess.End(ctx, kgo.TryCommit)
		if err == nil && committed && len(fs.Records()) > 0 {
			commits.Add(1)
		}
		if err != nil && ctx.Err() == nil {
			t.Logf("end: %v", err)
		}
	}
}

// TestKillDuringExactlyOnceTransformKeepsEachRecordOnce kills `keyline
// serve` with SIGKILL while a franz-go group transaction session copies a
// topic, restarts it on the same data directory and lets a new session
// finish: a read_committed consumer of the output finds every input record
// exactly once.
func TestKillDuringExactlyOnceTransformKeepsEachRecordOnce(t *testing.T) {
	dir := t.TempDir()
	p := serveProcess(t, dir)
	admin := &api{t: t, c: client.New(p.url, adminKey)}
	dep := admin.provisionDeployment(admin.keyProtect("eos-kp"), "eos")
	createTopic(t, dep.manager, "in", 2)
	createTopic(t, dep.manager, "out", 2)
	const n = 3000
	input := numbered("rec", 0, n)
	produceValues(t, franz(t, dep.writer), "in", input)

	var commits atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	sess := transformSession(t, dep.writer)
	go func() { defer close(done); transformLoop(ctx, t, sess, &commits) }()
	waitFor(t, 60*time.Second, "transactions to commit before the kill", func() bool { return commits.Load() >= 5 })
	p.kill()
	cancel()
	<-done
	sess.Close()
	t.Logf("%d transactions committed before the kill", commits.Load())

	p2 := serveProcess(t, dir)
	admin = &api{t: t, c: client.New(p2.url, adminKey)}
	info := admin.deploymentInfo(dep.guid)
	writer, reader := dep.writer, dep.reader
	writer.Brokers, reader.Brokers = nil, nil
	for _, b := range info["kafka_brokers_sasl"].([]any) {
		writer.Brokers = append(writer.Brokers, b.(string))
		reader.Brokers = append(reader.Brokers, b.(string))
	}
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	done = make(chan struct{})
	sess = transformSession(t, writer)
	go func() { defer close(done); transformLoop(ctx, t, sess, &commits) }()
	adm := kadm.NewClient(franz(t, reader))
	waitFor(t, 120*time.Second, "the group to commit every input offset", func() bool {
		offs, err := adm.FetchOffsets(testCtx(t), "eos")
		if err != nil {
			return false
		}
		var sum int64
		offs.Each(func(o kadm.OffsetResponse) { sum += o.At })
		return sum == n
	})
	cancel()
	<-done

	cons := franz(t, reader, kgo.ConsumeTopics("out"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.FetchMaxWait(500*time.Millisecond))
	seen := map[string]int{}
	rctx := testCtx(t)
	for quiet := 0; len(seen) < n || quiet < 3; {
		pctx, pcancel := context.WithTimeout(rctx, time.Second)
		fs := cons.PollFetches(pctx)
		pcancel()
		if rctx.Err() != nil {
			t.Fatalf("read %d of %d distinct output records", len(seen), n)
		}
		if len(fs.Records()) == 0 && len(seen) >= n {
			quiet++
		}
		for _, r := range fs.Records() {
			seen[string(r.Value)]++
		}
	}
	for _, v := range input {
		if c := seen["out-"+v]; c != 1 {
			t.Fatalf("input %s appears %d times in the read_committed output", v, c)
		}
	}
	if len(seen) != n {
		t.Fatalf("the output holds %d distinct records, want %d", len(seen), n)
	}
	t.Logf("%d transactions committed in all", commits.Load())
}
