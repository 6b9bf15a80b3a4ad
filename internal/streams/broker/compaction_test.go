package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// Markers searched for in the data directory: a key or value in plain
// would show them.
const (
	keyMarker   = "cmpkey-7d1e"
	valueMarker = "cmpval-4b9a"
)

// keyed is a record as the test produced it.
type keyed struct {
	key, value string
	tombstone  bool
}

// compactingBroker starts a broker on an encrypted store with 32 KiB
// segments, so a few hundred records roll several.
func compactingBroker(t *testing.T, mod ...func(*Config)) (testBroker, *seglog.Store, string) {
	t.Helper()
	dir := t.TempDir()
	key := make([]byte, 32)
	rand.Read(key)
	st, err := seglog.Open(dir, seglog.Options{StoreID: "dep", SegmentBytes: 32 << 10, Keys: []*seglog.DEK{{ID: "dek-first-5c1", Key: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	tb := startBroker(t, nil, append([]func(*Config){func(c *Config) { c.Storage = StorageOf(st) }}, mod...)...)
	return tb, st, dir
}

func createCompacted(t *testing.T, tb testBroker, topic string, configs map[string]string) *seglog.Partition {
	t.Helper()
	cfg := map[string]string{"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.01"}
	maps.Copy(cfg, configs)
	if _, err := tb.CreateTopic(t.Context(), topic, 1, cfg); err != nil {
		t.Fatal(err)
	}
	return tb.topics.partitions(tb.topics.byNameOrNil(topic))[0].log.(*seglog.Partition)
}

// keyedProducer batches a few records at a time (compressed, as by
// default), so a few hundred records make many batches.
func keyedProducer(t *testing.T, tb testBroker) *kgo.Client {
	return tb.client(t, writerKey, kgo.ProducerBatchMaxBytes(4<<10), kgo.ProducerLinger(5*time.Millisecond))
}

// produceKeyed produces recs in order (several per batch) and records each
// at the offset it got.
func produceKeyed(t *testing.T, cl *kgo.Client, topic string, into map[int64]keyed, recs ...keyed) {
	t.Helper()
	var mu sync.Mutex
	for _, k := range recs {
		r := &kgo.Record{Topic: topic, Key: []byte(k.key)}
		if !k.tombstone {
			r.Value = []byte(k.value)
		}
		cl.Produce(testCtx(t), r, func(r *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
				return
			}
			mu.Lock()
			into[r.Offset] = k
			mu.Unlock()
		})
	}
	if err := cl.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

// values are n records over keys, each value naming its key and sequence
// and padded (incompressibly) so a few hundred fill several segments.
func values(from, n, keys int) []keyed {
	out := make([]keyed, n)
	for i := range out {
		k := (from + i) % keys
		out[i] = keyed{key: fmt.Sprintf("%s-%d", keyMarker, k), value: fmt.Sprintf("%s-%d-%d-%s", valueMarker, k, from+i, rand.Text()+rand.Text()+rand.Text())}
	}
	return out
}

func tombstone(key int) keyed {
	return keyed{key: fmt.Sprintf("%s-%d", keyMarker, key), tombstone: true}
}

// expectCompacted is what a log cleaned below end holds: each key's newest
// record below end (its tombstone only when keepTombstones) and all from
// end on.
func expectCompacted(all map[int64]keyed, end int64, keepTombstones bool) map[int64]keyed {
	newest := map[string]int64{}
	for off, r := range all {
		if off < end && off >= newest[r.key] {
			newest[r.key] = off
		}
	}
	out := map[int64]keyed{}
	for off, r := range all {
		if off >= end || newest[r.key] == off && (keepTombstones || !r.tombstone) {
			out[off] = r
		}
	}
	return out
}

// consumeFromStart reads the topic from its start with franz-go up to its
// last offset, across the gaps compaction left.
func consumeFromStart(t *testing.T, tb testBroker, topic string, last int64) map[int64]keyed {
	t.Helper()
	cl := tb.client(t, readerKey, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := map[int64]keyed{}
	ctx := testCtx(t)
	for seen := int64(-1); seen < last; {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed up to %d of %d: %v", seen, last, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		for _, r := range fs.Records() {
			got[r.Offset] = keyed{key: string(r.Key), value: string(r.Value), tombstone: r.Value == nil}
			seen = max(seen, r.Offset)
		}
	}
	return got
}

func sameRecords(t *testing.T, what string, got, want map[int64]keyed) {
	t.Helper()
	if maps.Equal(got, want) {
		return
	}
	for _, off := range slices.Sorted(maps.Keys(want)) {
		if got[off] != want[off] {
			t.Fatalf("%s: offset %d holds %+v, want %+v (%d records, want %d)", what, off, got[off], want[off], len(got), len(want))
		}
	}
	t.Fatalf("%s: %d records, want %d", what, len(got), len(want))
}

// scanDataDir fails if a key or value marker is in any file under dir.
func scanDataDir(t *testing.T, dir string, markers ...string) {
	t.Helper()
	n := 0
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		for _, m := range markers {
			if bytes.Contains(b, []byte(m)) {
				t.Errorf("%s holds %q in plain", path, m)
			}
		}
		return nil
	})
	if n == 0 {
		t.Fatal("no files scanned")
	}
}

func TestCompactionKeepsTheNewestValuePerKey(t *testing.T) {
	tb, _, dir := compactingBroker(t)
	log := createCompacted(t, tb, "profiles", nil)
	cl := keyedProducer(t, tb)
	produced := map[int64]keyed{}
	produceKeyed(t, cl, "profiles", produced, values(0, 600, 6)...)
	produceKeyed(t, cl, "profiles", produced, tombstone(5))
	produceKeyed(t, cl, "profiles", produced, values(600, 300, 5)...)
	last := int64(len(produced) - 1)

	tb.CompactNow(t.Context())
	cp := log.CleanerCheckpoint()
	if cp < 600 || tb.Compaction().Removed < 500 || tb.Compaction().WrittenBytes >= tb.Compaction().ReadBytes {
		t.Fatalf("checkpoint %d, totals %+v: want most of the log cleaned", cp, tb.Compaction())
	}
	want := expectCompacted(produced, cp, true)
	if _, ok := want[600]; !ok {
		t.Fatal("the tombstone should still be there before delete.retention.ms")
	}
	sameRecords(t, "franz-go", consumeFromStart(t, tb, "profiles", last), want)

	// librdkafka, through kcat, reads across the gaps too.
	out, err := kcat(t, tb, readerKey, "", "-C", "-t", "profiles", "-o", "beginning", "-e", "-f", "%o %k %S\n")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, off := range slices.Sorted(maps.Keys(want)) {
		size := len(want[off].value)
		if want[off].tombstone {
			size = -1
		}
		lines = append(lines, fmt.Sprintf("%d %s %d", off, want[off].key, size))
	}
	if got := strings.Split(strings.TrimSpace(out), "\n"); !slices.Equal(got, lines) {
		t.Fatalf("kcat read %d records, want %d:\n%s", len(got), len(lines), out)
	}
	scanDataDir(t, dir, keyMarker, valueMarker)
}

func TestCompactionRemovesTombstonesAfterDeleteRetention(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	tb, _, _ := compactingBroker(t, func(c *Config) { c.Clock = clock })
	log := createCompacted(t, tb, "sessions", map[string]string{"delete.retention.ms": strconv.Itoa(int(time.Hour.Milliseconds()))})
	cl := keyedProducer(t, tb)
	produced := map[int64]keyed{}
	produceKeyed(t, cl, "sessions", produced, values(0, 100, 2)...)
	produceKeyed(t, cl, "sessions", produced, tombstone(1))
	tomb := int64(len(produced) - 1)
	produceKeyed(t, cl, "sessions", produced, values(100, 200, 1)...) // key 0 only

	tb.CompactNow(t.Context())
	got := consumeFromStart(t, tb, "sessions", int64(len(produced)-1))
	sameRecords(t, "before delete.retention.ms", got, expectCompacted(produced, log.CleanerCheckpoint(), true))
	if !got[tomb].tombstone {
		t.Fatal("the tombstone went before delete.retention.ms")
	}

	clock.Advance(2 * time.Hour)
	produceKeyed(t, cl, "sessions", produced, values(300, 200, 1)...)
	tb.CompactNow(t.Context())
	got = consumeFromStart(t, tb, "sessions", int64(len(produced)-1))
	sameRecords(t, "after delete.retention.ms", got, expectCompacted(produced, log.CleanerCheckpoint(), false))
	for off, r := range got {
		if r.key == tombstone(1).key {
			t.Fatalf("key 1 still has a record at %d after its tombstone's delete.retention.ms", off)
		}
	}
}

// TestCompactDeleteTopicAppliesBoth: retention removes whole old segments
// and the cleaner compacts what is left.
func TestCompactDeleteTopicAppliesBoth(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	tb, _, _ := compactingBroker(t, func(c *Config) { c.Clock = clock })
	log := createCompacted(t, tb, "prices", map[string]string{"cleanup.policy": "compact,delete", "retention.ms": "3600000",
		"message.timestamp.type": "LogAppendTime"})
	cl := keyedProducer(t, tb)
	produced := map[int64]keyed{}
	produceKeyed(t, cl, "prices", produced, values(0, 600, 3)...)
	clock.Advance(2 * time.Hour)
	produceKeyed(t, cl, "prices", produced, values(600, 600, 3)...)

	tb.applyRetention()
	tb.CompactNow(t.Context())
	start, cp := log.StartOffset(), log.CleanerCheckpoint()
	if start == 0 || start > 600 || cp <= 600 {
		t.Fatalf("start %d, checkpoint %d: want the old segments retained away and the rest cleaned", start, cp)
	}
	for off := range produced {
		if off < start {
			delete(produced, off)
		}
	}
	sameRecords(t, "compact,delete", consumeFromStart(t, tb, "prices", int64(1199)), expectCompacted(produced, cp, true))
}

func TestCompactionRunsInTheBackground(t *testing.T) {
	tb, _, _ := compactingBroker(t, func(c *Config) { c.CompactionInterval = 20 * time.Millisecond })
	log := createCompacted(t, tb, "inventory", nil)
	cl := keyedProducer(t, tb)
	produced := map[int64]keyed{}
	produceKeyed(t, cl, "inventory", produced, values(0, 400, 4)...)
	waitFor(t, "the background cleaner", func() bool { return log.CleanerCheckpoint() > 300 && tb.Compaction().Passes > 0 })
	tb.Close()
	sameRecords(t, "background", logRecords(t, log), expectCompacted(produced, log.CleanerCheckpoint(), true))
}

// logRecords reads a partition log directly.
func logRecords(t *testing.T, log *seglog.Partition) map[int64]keyed {
	t.Helper()
	got := map[int64]keyed{}
	for from := log.StartOffset(); from < log.EndOffset(); {
		bs, err := log.Read(t.Context(), from, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range bs {
			recs, _, err := kafkaRecords(b.Meta, b.Data)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range recs {
				value := ""
				if !r.Tombstone {
					value = recordValue(t, r.Raw)
				}
				got[r.Offset] = keyed{key: string(r.Key), value: value, tombstone: r.Tombstone}
			}
			from = b.Meta.LastOffset() + 1
		}
	}
	return got
}

// TestCompactionDuringKeyRotation cleans while the deployment's key
// rotates: everything stays readable and nothing stays under the old key.
func TestCompactionDuringKeyRotation(t *testing.T) {
	tb, st, dir := compactingBroker(t)
	log := createCompacted(t, tb, "accounts", map[string]string{"min.cleanable.dirty.ratio": "0.0"})
	cl := keyedProducer(t, tb)
	produced := map[int64]keyed{}
	produceKeyed(t, cl, "accounts", produced, values(0, 600, 5)...)

	ctx, stop := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			tb.CompactNow(ctx)
			produceKeyed(t, cl, "accounts", produced, values(600+i*20, 20, 5)...)
		}
	})
	key := make([]byte, 32)
	rand.Read(key)
	err := st.ReencryptTo(t.Context(), &seglog.DEK{ID: "dek-second-e40", Key: key}, nil)
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	tb.CompactNow(t.Context())
	last := int64(len(produced) - 1)
	sameRecords(t, "after rotation", consumeFromStart(t, tb, "accounts", last), expectCompacted(produced, log.CleanerCheckpoint(), true))
	if ids := st.KeyIDsInUse(); !slices.Equal(ids, []string{"dek-second-e40"}) {
		t.Fatalf("keys in use %v", ids)
	}
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if b, _ := os.ReadFile(path); bytes.Contains(b, []byte("dek-first-5c1")) {
				t.Errorf("%s still holds a block sealed by the old key", path)
			}
		}
		return nil
	})
}

func recordValue(t *testing.T, raw []byte) string {
	t.Helper()
	var r kmsg.Record
	if err := r.ReadFrom(raw); err != nil {
		t.Fatal(err)
	}
	return string(r.Value)
}

// TestCompactionDropsAbortedAndSparesOpenTransactions: a value written in
// an aborted transaction never stands for its key (the committed value it
// would have superseded survives), and nothing from an open transaction's
// first offset on is cleaned while it may still abort.
func TestCompactionDropsAbortedAndSparesOpenTransactions(t *testing.T) {
	tb, _, _ := compactingBroker(t)
	log := createCompacted(t, tb, "accounts", nil)
	ctx := testCtx(t)
	txn := tb.txnProducer(t, "cmp-txn", kgo.DefaultProduceTopic("accounts"))
	run := func(commit bool, recs ...keyed) {
		t.Helper()
		if err := txn.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		for _, k := range recs {
			if err := txn.ProduceSync(ctx, &kgo.Record{Key: []byte(k.key), Value: []byte(k.value)}).FirstErr(); err != nil {
				t.Fatal(err)
			}
		}
		if err := txn.EndTransaction(ctx, kgo.TransactionEndTry(commit)); err != nil {
			t.Fatal(err)
		}
	}
	run(true, keyed{key: "balance", value: "committed-100"})
	run(false, keyed{key: "balance", value: "aborted-999"})
	// Plain records over other keys roll the segments holding both.
	plain := keyedProducer(t, tb)
	produced := map[int64]keyed{}
	produceKeyed(t, plain, "accounts", produced, values(0, 900, 3)...)

	tb.CompactNow(t.Context())
	if log.CleanerCheckpoint() < 400 {
		t.Fatalf("checkpoint %d: the pass should have cleaned the log", log.CleanerCheckpoint())
	}
	committed := tb.client(t, readerKey, kgo.ConsumeTopics("accounts"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	var balance []string
	for seen := 0; seen < 3; {
		fs := committed.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("balance values read: %q", balance)
		}
		for _, r := range fs.Records() {
			if string(r.Key) == "balance" {
				balance = append(balance, string(r.Value))
			}
			if strings.HasPrefix(string(r.Key), keyMarker) && r.Offset == log.EndOffset()-1 {
				seen = 3
			}
		}
	}
	if !slices.Equal(balance, []string{"committed-100"}) {
		t.Fatalf("read_committed sees balance %q after compaction, want the committed value only", balance)
	}

	// An open transaction: its value and everything after it stay, even
	// though later plain records supersede nothing of theirs.
	if err := txn.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := txn.ProduceSync(ctx, &kgo.Record{Key: []byte("balance"), Value: []byte("pending-5")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	open := log.EndOffset() - 1
	produceKeyed(t, plain, "accounts", produced, values(900, 900, 3)...)
	before := log.CleanerCheckpoint()
	tb.CompactNow(t.Context())
	if cp := log.CleanerCheckpoint(); cp > open {
		t.Fatalf("the cleaner went to %d (from %d), past the open transaction's record at %d", cp, before, open)
	}
	if err := txn.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
}
