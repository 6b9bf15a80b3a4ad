package broker

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func produceN(t *testing.T, cl *kgo.Client, topic string, from, n int) {
	t.Helper()
	var rs []*kgo.Record
	for i := from; i < from+n; i++ {
		rs = append(rs, &kgo.Record{Topic: topic, Value: []byte(fmt.Sprintf("r%04d", i))})
	}
	if err := cl.ProduceSync(testCtx(t), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// assignments returns how many partitions each member of group holds.
func assignments(t *testing.T, adm *kadm.Client, group string) []int {
	t.Helper()
	dg, err := adm.DescribeGroups(testCtx(t), group)
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, m := range dg[group].Members {
		n := 0
		if a, ok := m.Assigned.AsConsumer(); ok {
			for _, tp := range a.Topics {
				n += len(tp.Partitions)
			}
		}
		out = append(out, n)
	}
	return out
}

// waitFor polls cond until it holds or the test's deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx := testCtx(t)
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("gave up waiting for %s", what)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func sameCounts(got []int, want ...int) bool {
	if len(got) != len(want) {
		return false
	}
	seen := map[int]int{}
	for _, n := range got {
		seen[n]++
	}
	for _, n := range want {
		seen[n]--
	}
	for _, v := range seen {
		if v != 0 {
			return false
		}
	}
	return true
}

func TestGroupMembersSplitPartitionsAndRebalanceOnLeave(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "events", 4)
	adm := tb.admin(t, readerKey)
	produceN(t, tb.client(t, writerKey), "events", 0, 40)

	var mu sync.Mutex
	seen := map[string]bool{}
	member := func() (*kgo.Client, chan struct{}) {
		cl := tb.client(t, readerKey, kgo.ConsumerGroup("g1"), kgo.ConsumeTopics("events"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				fs := cl.PollFetches(t.Context())
				if fs.IsClientClosed() || t.Context().Err() != nil {
					return
				}
				mu.Lock()
				for _, r := range fs.Records() {
					seen[string(r.Value)] = true
				}
				mu.Unlock()
			}
		}()
		return cl, done
	}
	_, done1 := member()
	waitFor(t, "the first member to own all partitions", func() bool { return sameCounts(assignments(t, adm, "g1"), 4) })
	cl2, done2 := member()
	waitFor(t, "two members with two partitions each", func() bool { return sameCounts(assignments(t, adm, "g1"), 2, 2) })
	waitFor(t, "all records consumed", func() bool { mu.Lock(); defer mu.Unlock(); return len(seen) == 40 })

	listed, err := adm.ListGroups(testCtx(t))
	if err != nil || listed["g1"].State != "Stable" {
		t.Fatalf("ListGroups: %v %+v", err, listed)
	}
	for _, k := range tb.store.metaKeys() {
		if strings.Contains(k, "g1") {
			t.Fatalf("storage key %q holds a group name", k)
		}
	}

	cl2.Close() // leaves the group
	<-done2
	waitFor(t, "the remaining member to own all partitions", func() bool { return sameCounts(assignments(t, adm, "g1"), 4) })
	_ = done1
}

func TestCommittedOffsetsSurviveRestart(t *testing.T) {
	store := newMemStore()
	tb := startBroker(t, store)
	tb.mustCreate(t, "ledger", 2)
	produceN(t, tb.client(t, writerKey), "ledger", 0, 10)

	first := tb.client(t, readerKey, kgo.ConsumerGroup("resume"), kgo.ConsumeTopics("ledger"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	if got := consume(t, first, 10); len(got) != 10 {
		t.Fatalf("first consumer read %d records", len(got))
	}
	if err := first.CommitUncommittedOffsets(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	first.Close()
	tb.Close()

	tb = startBroker(t, store)
	produceN(t, tb.client(t, writerKey), "ledger", 10, 5)
	second := tb.client(t, readerKey, kgo.ConsumerGroup("resume"), kgo.ConsumeTopics("ledger"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := consume(t, second, 5)
	for _, r := range got {
		var i int
		fmt.Sscanf(string(r.Value), "r%d", &i)
		if i < 10 {
			t.Fatalf("resumed consumer re-read committed record %s", r.Value)
		}
	}
	offsets, err := tb.admin(t, readerKey).FetchOffsets(testCtx(t), "resume")
	if err != nil {
		t.Fatal(err)
	}
	var sum int64
	offsets.Each(func(o kadm.OffsetResponse) { sum += o.At })
	if sum < 10 {
		t.Fatalf("committed offsets sum to %d, want at least 10", sum)
	}
}
