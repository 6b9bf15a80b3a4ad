package broker

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

// txnProducer is a transactional franz-go producer writing to the
// partitions its records name.
func (tb testBroker) txnProducer(t testing.TB, id string, opts ...kgo.Opt) *kgo.Client {
	return tb.client(t, writerKey, append([]kgo.Opt{kgo.TransactionalID(id), kgo.DefaultProduceTopic("ledger"),
		kgo.RecordPartitioner(kgo.ManualPartitioner())}, opts...)...)
}

// inTxn begins a transaction, produces values to partitions and flushes.
func inTxn(t *testing.T, cl *kgo.Client, values map[int32][]string) {
	t.Helper()
	ctx := testCtx(t)
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	for p, vs := range values {
		for _, v := range vs {
			if err := cl.ProduceSync(ctx, &kgo.Record{Partition: p, Value: []byte(v)}).FirstErr(); err != nil {
				t.Fatalf("produce %s: %v", v, err)
			}
		}
	}
}

func endTxn(t *testing.T, cl *kgo.Client, commit kgo.TransactionEndTry) {
	t.Helper()
	if err := cl.EndTransaction(testCtx(t), commit); err != nil {
		t.Fatalf("end transaction: %v", err)
	}
}

// readLedger reads topic from the start with an isolation level until it has
// seen every value in want, then a little longer, and returns the values.
func readLedger(t *testing.T, tb testBroker, level kgo.IsolationLevel, want ...string) map[string]int {
	t.Helper()
	cl := tb.client(t, readerKey, kgo.ConsumeTopics("ledger"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(level))
	got := map[string]int{}
	missing := func() bool {
		for _, w := range want {
			if got[w] == 0 {
				return true
			}
		}
		return false
	}
	ctx := testCtx(t)
	for extra := 0; missing() || extra < 2; {
		if !missing() {
			extra++
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		fs := cl.PollFetches(pctx)
		cancel()
		if ctx.Err() != nil {
			t.Fatalf("read %v, still missing some of %v", got, want)
		}
		fs.EachError(func(topic string, p int32, err error) {
			if err != context.DeadlineExceeded {
				t.Fatalf("fetch %s/%d: %v", topic, p, err)
			}
		})
		for _, r := range fs.Records() {
			got[string(r.Value)]++
		}
	}
	return got
}

func has(got map[string]int, prefix string) bool {
	for v := range got {
		if strings.HasPrefix(v, prefix) {
			return true
		}
	}
	return false
}

// stableAndEnd is the partition's last stable offset and high watermark.
func stableAndEnd(t *testing.T, tb testBroker, partition int32) (int64, int64) {
	t.Helper()
	adm := tb.admin(t, readerKey)
	stable, err := adm.ListCommittedOffsets(testCtx(t), "ledger")
	if err != nil {
		t.Fatal(err)
	}
	end, err := adm.ListEndOffsets(testCtx(t), "ledger")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := stable.Lookup("ledger", partition)
	e, _ := end.Lookup("ledger", partition)
	return s.Offset, e.Offset
}

func TestReadCommittedSeesOnlyCommittedTransactions(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "ledger", 3)
	prod := tb.txnProducer(t, "payments")
	inTxn(t, prod, map[int32][]string{0: {"c1-0", "c1-1"}, 1: {"c1-2"}})
	endTxn(t, prod, kgo.TryCommit)
	inTxn(t, prod, map[int32][]string{2: {"a1-0", "a1-1"}, 0: {"a1-2"}})
	endTxn(t, prod, kgo.TryAbort)

	// An open transaction holds the last stable offset at its first record.
	inTxn(t, prod, map[int32][]string{2: {"open-0"}})
	stable, end := stableAndEnd(t, tb, 2)
	if stable != 3 || end != 4 {
		t.Fatalf("partition 2 with an open transaction: stable %d end %d, want 3 and 4", stable, end)
	}
	if got := readLedger(t, tb, kgo.ReadCommitted(), "c1-0", "c1-1", "c1-2"); has(got, "open") || has(got, "a1") {
		t.Fatalf("read_committed read %v during an open transaction", got)
	}
	if err := prod.ProduceSync(testCtx(t), &kgo.Record{Partition: 2, Value: []byte("c2-0")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	endTxn(t, prod, kgo.TryCommit)

	committed := []string{"c1-0", "c1-1", "c1-2", "open-0", "c2-0"}
	got := readLedger(t, tb, kgo.ReadCommitted(), committed...)
	if has(got, "a1") || len(got) != len(committed) {
		t.Fatalf("read_committed read %v, want exactly %v", got, committed)
	}
	for v, n := range got {
		if n != 1 {
			t.Fatalf("read_committed read %s %d times", v, n)
		}
	}
	if got := readLedger(t, tb, kgo.ReadUncommitted(), append(committed, "a1-0", "a1-1", "a1-2")...); len(got) != len(committed)+3 {
		t.Fatalf("read_uncommitted read %v, want the aborted records too", got)
	}
}

func TestSecondProducerFencesTheFirst(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "ledger", 1)
	first := tb.txnProducer(t, "fenced")
	inTxn(t, first, map[int32][]string{0: {"zombie-0"}})
	second := tb.txnProducer(t, "fenced")
	inTxn(t, second, map[int32][]string{0: {"live-0"}})

	err := first.EndTransaction(testCtx(t), kgo.TryCommit)
	if err == nil {
		t.Fatal("the fenced producer committed")
	}
	endTxn(t, second, kgo.TryCommit)
	if got := readLedger(t, tb, kgo.ReadCommitted(), "live-0"); has(got, "zombie") {
		t.Fatalf("read_committed read the fenced producer's records: %v", got)
	}
}

func TestTransactionTimeoutAborts(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "ledger", 1)
	prod := tb.txnProducer(t, "slow", kgo.TransactionTimeout(3*time.Second))
	inTxn(t, prod, map[int32][]string{0: {"late-0", "late-1"}})
	waitFor(t, "the expired transaction to be aborted", func() bool {
		stable, end := stableAndEnd(t, tb, 0)
		return stable == end
	})
	if err := prod.EndTransaction(testCtx(t), kgo.TryCommit); err == nil {
		t.Fatal("an expired transaction committed")
	}
	other := tb.txnProducer(t, "other")
	inTxn(t, other, map[int32][]string{0: {"ok-0"}})
	endTxn(t, other, kgo.TryCommit)
	if got := readLedger(t, tb, kgo.ReadCommitted(), "ok-0"); has(got, "late") {
		t.Fatalf("read_committed read an expired transaction's records: %v", got)
	}
}

func TestTransactionsSurviveRestart(t *testing.T) {
	store := newMemStore()
	tb := startBroker(t, store)
	tb.mustCreate(t, "ledger", 2)
	prod := tb.txnProducer(t, "restarts")
	inTxn(t, prod, map[int32][]string{0: {"c-0"}, 1: {"c-1"}})
	endTxn(t, prod, kgo.TryCommit)
	inTxn(t, prod, map[int32][]string{0: {"a-0"}})
	endTxn(t, prod, kgo.TryAbort)
	inTxn(t, prod, map[int32][]string{1: {"open-0", "open-1"}})
	prod.Close()
	tb.Close()

	tb = startBroker(t, store)
	if stable, end := stableAndEnd(t, tb, 1); stable != 2 || end != 4 {
		t.Fatalf("after a restart, partition 1: stable %d end %d, want the open transaction to hold it at 2 of 4", stable, end)
	}
	// A new producer with the id aborts what the old one left open.
	again := tb.txnProducer(t, "restarts")
	inTxn(t, again, map[int32][]string{0: {"c2-0"}})
	endTxn(t, again, kgo.TryCommit)
	if stable, end := stableAndEnd(t, tb, 1); stable != end {
		t.Fatalf("re-init left partition 1's transaction open: stable %d end %d", stable, end)
	}
	tb.Close()

	tb = startBroker(t, store)
	got := readLedger(t, tb, kgo.ReadCommitted(), "c-0", "c-1", "c2-0")
	if has(got, "a-") || has(got, "open") || len(got) != 3 {
		t.Fatalf("read_committed after restarts read %v", got)
	}
}

// transform runs one consume-transform-produce round of a group
// transaction session: it reads what the group has not committed from "in"
// and writes each value with an "out-" prefix to "ledger".
func transform(t *testing.T, tb testBroker, want int, end kgo.TransactionEndTry) {
	t.Helper()
	ctx := testCtx(t)
	sess, err := kgo.NewGroupTransactSession(
		kgo.SeedBrokers(tb.Addr().String()),
		kgo.SASL(plain.Auth{User: "token", Pass: writerKey}.AsMechanism()),
		kgo.TransactionalID("transformer"), kgo.ConsumerGroup("eos"), kgo.ConsumeTopics("in"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.DefaultProduceTopic("ledger"), kgo.RequireStableFetchOffsets(), kgo.FetchMaxWait(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	if err := sess.Begin(); err != nil {
		t.Fatal(err)
	}
	for n := 0; n < want; {
		fs := sess.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %d of %d input records", n, want)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		for _, r := range fs.Records() {
			sess.Produce(ctx, &kgo.Record{Value: append([]byte("out-"), r.Value...)}, nil)
			n++
		}
	}
	committed, err := sess.End(ctx, end)
	if err != nil || committed != (end == kgo.TryCommit) {
		t.Fatalf("end: committed %v, %v", committed, err)
	}
}

func TestGroupTransactionCommitsOffsetsOnlyWithItsRecords(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "in", 1)
	tb.mustCreate(t, "ledger", 1)
	produceN(t, tb.client(t, writerKey), "in", 0, 10)

	transform(t, tb, 10, kgo.TryAbort)
	if offsets, err := tb.admin(t, readerKey).FetchOffsets(testCtx(t), "eos"); err != nil || len(offsets["in"]) != 0 && offsets["in"][0].At >= 0 {
		t.Fatalf("an aborted transaction committed the group's offsets: %v %v", offsets, err)
	}
	transform(t, tb, 10, kgo.TryCommit)
	offsets, err := tb.admin(t, readerKey).FetchOffsets(testCtx(t), "eos")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := offsets.Lookup("in", 0); o.At != 10 {
		t.Fatalf("group offset %d after the commit, want 10", o.At)
	}
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprintf("out-r%04d", i))
	}
	got := readLedger(t, tb, kgo.ReadCommitted(), want...)
	for v, n := range got {
		if n != 1 || !strings.HasPrefix(v, "out-") {
			t.Fatalf("read_committed output %v: each input once expected", got)
		}
	}
	if len(got) != 10 {
		t.Fatalf("read_committed output %v: want 10 records", got)
	}
}

// txnRequests drives a transaction with raw requests.
type txnRequests struct {
	t   *testing.T
	cl  *kgo.Client
	id  string
	pid int64
	ep  int16
}

func (tr *txnRequests) init() {
	req := kmsg.NewPtrInitProducerIDRequest()
	req.TransactionalID, req.TransactionTimeoutMillis = &tr.id, 60000
	resp, err := req.RequestWith(testCtx(tr.t), tr.cl)
	if err != nil || resp.ErrorCode != 0 {
		tr.t.Fatalf("init producer id: %v %v", err, kerr.ErrorForCode(resp.ErrorCode))
	}
	tr.pid, tr.ep = resp.ProducerID, resp.ProducerEpoch
}

func (tr *txnRequests) commitOffset(group, topic string, partition int32, offset int64) {
	add := kmsg.NewPtrAddOffsetsToTxnRequest()
	add.TransactionalID, add.ProducerID, add.ProducerEpoch, add.Group = tr.id, tr.pid, tr.ep, group
	if resp, err := add.RequestWith(testCtx(tr.t), tr.cl); err != nil || resp.ErrorCode != 0 {
		tr.t.Fatalf("add offsets: %v %v", err, kerr.ErrorForCode(resp.ErrorCode))
	}
	req := kmsg.NewPtrTxnOffsetCommitRequest()
	req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Group, req.Generation = tr.id, tr.pid, tr.ep, group, -1
	rt := kmsg.NewTxnOffsetCommitRequestTopic()
	rt.Topic = topic
	rp := kmsg.NewTxnOffsetCommitRequestTopicPartition()
	rp.Partition, rp.Offset = partition, offset
	rt.Partitions = append(rt.Partitions, rp)
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(tr.t), tr.cl)
	if err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
		tr.t.Fatalf("txn offset commit: %v %+v", err, resp)
	}
}

func (tr *txnRequests) end(commit bool) int16 {
	req := kmsg.NewPtrEndTxnRequest()
	req.TransactionalID, req.ProducerID, req.ProducerEpoch, req.Commit = tr.id, tr.pid, tr.ep, commit
	resp, err := req.RequestWith(testCtx(tr.t), tr.cl)
	if err != nil {
		tr.t.Fatal(err)
	}
	return resp.ErrorCode
}

// stableOffsetFetch fetches a group's offset with RequireStable.
func stableOffsetFetch(t *testing.T, cl *kgo.Client, group, topic string) (int64, int16) {
	req := kmsg.NewPtrOffsetFetchRequest()
	req.Group, req.RequireStable = group, true
	rt := kmsg.NewOffsetFetchRequestTopic()
	rt.Topic, rt.Partitions = topic, []int32{0}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Groups) > 0 { // v8+
		p := resp.Groups[0].Topics[0].Partitions[0]
		return p.Offset, p.ErrorCode
	}
	p := resp.Topics[0].Partitions[0]
	return p.Offset, p.ErrorCode
}

func TestPendingTransactionalOffsetIsUnstable(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "ledger", 1)
	cl := tb.client(t, writerKey)
	tr := &txnRequests{t: t, cl: cl, id: "raw"}
	tr.init()
	tr.commitOffset("audit", "ledger", 0, 7)
	if _, code := stableOffsetFetch(t, cl, "audit", "ledger"); code != kerr.UnstableOffsetCommit.Code {
		t.Fatalf("a pending transactional offset fetched with RequireStable: %v, want UNSTABLE_OFFSET_COMMIT", kerr.ErrorForCode(code))
	}
	if code := tr.end(true); code != 0 {
		t.Fatalf("end: %v", kerr.ErrorForCode(code))
	}
	if off, code := stableOffsetFetch(t, cl, "audit", "ledger"); code != 0 || off != 7 {
		t.Fatalf("after the commit: offset %d, %v", off, kerr.ErrorForCode(code))
	}
	// The old epoch is fenced once a new producer takes the id.
	old := *tr
	tr.init()
	if code := old.end(true); code != kerr.ProducerFenced.Code && code != kerr.InvalidProducerEpoch.Code {
		t.Fatalf("the fenced epoch ended a transaction: %v", kerr.ErrorForCode(code))
	}
	if code := tr.end(true); code != kerr.InvalidTxnState.Code {
		t.Fatalf("ending no transaction: %v, want INVALID_TXN_STATE", kerr.ErrorForCode(code))
	}
}

func TestAbortedIndexIsTrimmedWithTheLog(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "ledger", 1)
	prod := tb.txnProducer(t, "trimmed")
	inTxn(t, prod, map[int32][]string{0: {"a-0"}})
	endTxn(t, prod, kgo.TryAbort)
	if n := len(tb.store.ListMeta(abortedMetaPrefix)); n != 1 {
		t.Fatalf("%d aborted index entries, want 1", n)
	}
	if _, err := tb.admin(t, managerKey).DeleteRecords(testCtx(t), kadmOffsets("ledger", 0, 2)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the aborted index to drop the deleted records' entry", func() bool {
		return len(tb.store.ListMeta(abortedMetaPrefix)) == 0
	})
}

func TestOpenTransactionTimesOutAfterRestart(t *testing.T) {
	store := newMemStore()
	tb := startBroker(t, store)
	tb.mustCreate(t, "ledger", 1)
	prod := tb.txnProducer(t, "orphan", kgo.TransactionTimeout(3*time.Second))
	inTxn(t, prod, map[int32][]string{0: {"orphan-0"}})
	prod.Close()
	tb.Close()

	tb = startBroker(t, store)
	waitFor(t, "the orphaned transaction to time out", func() bool {
		stable, end := stableAndEnd(t, tb, 0)
		return stable == end
	})
	other := tb.txnProducer(t, "other")
	inTxn(t, other, map[int32][]string{0: {"ok-0"}})
	endTxn(t, other, kgo.TryCommit)
	if got := readLedger(t, tb, kgo.ReadCommitted(), "ok-0"); has(got, "orphan") {
		t.Fatalf("read_committed read the orphaned transaction's records: %v", got)
	}
}
