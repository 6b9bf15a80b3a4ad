package objlog_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/broker"
	"github.com/keyline/keyline/internal/streams/objlog"
	"github.com/keyline/keyline/internal/streams/seglog"
)

func (e *env) mustOpenView(t *testing.T) *objlog.View {
	t.Helper()
	v, err := objlog.OpenView(context.Background(), e.db, objlog.Options{StoreID: "dep1", Keys: []*seglog.DEK{testDEK("dek-1", 7)}})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	if e := errs.As(err); e == nil || e.Code != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
}

func TestViewSeesCommittedMetadataAfterRefreshAndRefusesWrites(t *testing.T) {
	e := newEnv(t)
	st := e.mustOpen(t)
	ctx := context.Background()
	if err := st.PutMeta("topic/a", []byte("first")); err != nil {
		t.Fatal(err)
	}
	p, err := st.Partition("topicid1-0", true)
	if err != nil {
		t.Fatal(err)
	}
	mustAppend(t, p, batchMeta(3, 1000, -1, 0), []byte("batch one"))

	v := e.mustOpenView(t)
	if got, ok := v.GetMeta("topic/a"); !ok || string(got) != "first" {
		t.Fatalf("view's topic/a = %q, %v", got, ok)
	}
	vp, err := v.Partition("topicid1-0", false)
	if err != nil || vp.EndOffset() != 3 || vp.SizeBytes() != p.SizeBytes() {
		t.Fatalf("view's partition: %v, end %d size %d; want end 3 size %d", err, vp.EndOffset(), vp.SizeBytes(), p.SizeBytes())
	}

	// Changes through the store reach the view on Refresh, not before.
	if err := st.PutMeta("topic/b", []byte("second")); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMeta("topic/a"); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, p, batchMeta(2, 2000, -1, 0), []byte("batch two"))
	if _, err := st.Partition("topicid2-0", true); err != nil {
		t.Fatal(err)
	}
	if _, ok := v.GetMeta("topic/b"); ok {
		t.Fatal("the view saw a change before Refresh")
	}
	changed := vp.Changed()
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if got := v.ListMeta("topic/"); len(got) != 1 || string(got["topic/b"]) != "second" {
		t.Fatalf("after refresh the view lists %q", got)
	}
	if vp.EndOffset() != 5 {
		t.Fatalf("the partition view ends at %d after refresh, want 5", vp.EndOffset())
	}
	select {
	case <-changed:
	default:
		t.Fatal("the partition view's change signal did not fire")
	}
	if names := v.Partitions(); len(names) != 2 {
		t.Fatalf("view lists partitions %v", names)
	}

	// Every write is refused and changes nothing.
	wantCode(t, "PutMeta", v.PutMeta("topic/c", []byte("x")), objlog.CodeReadOnly)
	wantCode(t, "DeleteMeta", v.DeleteMeta("topic/b"), objlog.CodeReadOnly)
	wantCode(t, "DropPartition", v.DropPartition("topicid1-0"), objlog.CodeReadOnly)
	_, err = v.Partition("topicid3-0", true)
	wantCode(t, "Partition(create)", err, objlog.CodeReadOnly)
	_, _, err = vp.AppendAsync(ctx, batchMeta(1, 3000, -1, 0), []byte("nope"))
	wantCode(t, "AppendAsync", err, objlog.CodeReadOnly)
	wantCode(t, "DeleteBefore", vp.DeleteBefore(4), objlog.CodeReadOnly)
	wantCode(t, "Retain", vp.Retain(time.Now(), 0, 0), objlog.CodeReadOnly)
	_, err = vp.Read(ctx, 0, 1<<20)
	wantCode(t, "Read", err, objlog.CodeReadOnly)
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := v.GetMeta("topic/b"); !ok || p.StartOffset() != 0 || p.EndOffset() != 5 {
		t.Fatal("a refused write changed the store")
	}

	// A dropped partition leaves the view.
	if err := st.DropPartition("topicid2-0"); err != nil {
		t.Fatal(err)
	}
	if err := v.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = v.Partition("topicid2-0", false)
	wantCode(t, "a dropped partition", err, objlog.CodePartitionNotFound)
}

func TestOpenViewChecksTheStoreAndItsKey(t *testing.T) {
	e := newEnv(t)
	e.mustOpen(t)
	ctx := context.Background()
	_, err := objlog.OpenView(ctx, e.db, objlog.Options{StoreID: "dep1", Keys: []*seglog.DEK{testDEK("dek-2", 9)}})
	wantCode(t, "another key", err, objlog.CodeKeyMismatch)
	_, err = objlog.OpenView(ctx, e.db, objlog.Options{StoreID: "dep2", Keys: []*seglog.DEK{testDEK("dek-1", 7)}})
	if !errs.Is(errs.NotExist, err) {
		t.Fatalf("a store never opened: %v, want NotExist", err)
	}
}

func TestMetadataChangesAreMarkedInTheChangeFeed(t *testing.T) {
	e := newEnv(t)
	if !e.db.Shared() {
		t.Skip("the change feed exists on PostgreSQL only (KEYLINE_TEST_DATABASE_URL)")
	}
	st := e.mustOpen(t)
	marks := func() int {
		var n int
		err := e.db.Read(context.Background(), func(tx *store.Tx) error {
			return tx.QueryRow(`SELECT COUNT(*) FROM keyline_changes WHERE topic = ? AND key = 'meta'`, objlog.MetaTopic("dep1")).Scan(&n)
		})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	steps := []struct {
		name string
		do   func() error
	}{
		{"PutMeta", func() error { return st.PutMeta("topic/a", []byte("v")) }},
		{"DeleteMeta", func() error { return st.DeleteMeta("topic/a") }},
		{"a new partition", func() error { _, err := st.Partition("topicid1-0", true); return err }},
		{"DropPartition", func() error { return st.DropPartition("topicid1-0") }},
	}
	for _, s := range steps {
		before := marks()
		if err := s.do(); err != nil {
			t.Fatal(err)
		}
		if after := marks(); after != before+1 {
			t.Fatalf("%s: %d marks of %s, want %d", s.name, after, objlog.MetaTopic("dep1"), before+1)
		}
	}

	// With Announced, only what followers read is marked: a topic, not a
	// group's offsets.
	st.Close()
	st = e.mustOpen(t, func(o *objlog.Options) { o.Announced = broker.FollowerReads })
	for _, s := range []struct {
		key   string
		marks int
	}{{"group/g1", 0}, {"topic/t1", 1}, {"txn/x", 0}} {
		before := marks()
		if err := st.PutMeta(s.key, []byte("v")); err != nil {
			t.Fatal(err)
		}
		if err := st.DeleteMeta(s.key); err != nil {
			t.Fatal(err)
		}
		if got := marks() - before; got != 2*s.marks {
			t.Fatalf("%s put and deleted: %d marks, want %d", s.key, got, 2*s.marks)
		}
	}
}

// clusterPlacement is two nodes with node 1 leading.
type clusterPlacement struct {
	mu      sync.Mutex
	brokers []broker.BrokerAddr
}

func (p *clusterPlacement) Brokers() []broker.BrokerAddr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.brokers
}

func (p *clusterPlacement) Leader() int32 { return 1 }

// serveNode runs a broker of node id over st until the test ends.
func serveNode(t *testing.T, id int32, st broker.Storage, pl broker.Placement, follower bool) (*broker.Broker, broker.BrokerAddr) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{NodeID: id, Listener: ln, Storage: st, Placement: pl, Follower: follower, RetentionInterval: 50 * time.Millisecond,
		Authenticate: func(context.Context, string, string) (broker.Access, error) { return broker.Manager, nil }})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); b.Serve(context.Background()) }()
	t.Cleanup(func() { b.Close(); <-served })
	return b, broker.BrokerAddr{NodeID: id, Host: "127.0.0.1", Port: int32(ln.Addr().(*net.TCPAddr).Port)}
}

func TestClientAtAFollowerOverAViewProducesAndConsumesThroughTheLeader(t *testing.T) {
	e := newEnv(t)
	st := e.mustOpen(t)
	view := e.mustOpenView(t)
	pl := &clusterPlacement{}
	_, leaderAddr := serveNode(t, 1, broker.StorageOf(st), pl, false)
	follower, followerAddr := serveNode(t, 2, broker.StorageOf(view), pl, true)
	pl.mu.Lock()
	pl.brokers = []broker.BrokerAddr{leaderAddr, followerAddr}
	pl.mu.Unlock()
	at := net.JoinHostPort(followerAddr.Host, strconv.Itoa(int(followerAddr.Port)))
	ctx := testCtx(t)

	// Created through the follower's bootstrap: the controller is the leader.
	adm := kadm.NewClient(client(t, at))
	if _, err := adm.CreateTopic(ctx, 2, 3, nil, canaryTopic); err != nil {
		t.Fatal(err)
	}
	// The follower learns of it once its view is refreshed (the change
	// feed's job in a cluster).
	if err := view.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if err := follower.ReloadTopics(); err != nil {
		t.Fatal(err)
	}
	if info, err := follower.Topic(ctx, canaryTopic); err != nil || info.Partitions != 2 {
		t.Fatalf("the follower's topic: %+v, %v", info, err)
	}

	prod := client(t, at, kgo.DefaultProduceTopic(canaryTopic))
	const n = 40
	for i := range n {
		if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: fmt.Appendf(nil, "%s-%d", canaryValue, i)}).FirstErr(); err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	if got := consumeValues(t, at, n, kgo.ConsumerGroup(canaryGroup), kgo.DisableAutoCommit()); len(got) != n {
		t.Fatalf("consumed %d distinct values, want %d", len(got), n)
	}
	offsets, err := adm.FetchOffsets(ctx, canaryGroup)
	if err != nil {
		t.Fatal(err)
	}
	var committed int64
	offsets.Each(func(o kadm.OffsetResponse) { committed += o.At })
	if committed != n {
		t.Fatalf("committed offsets add up to %d, want %d", committed, n)
	}
	// The follower's view reports the leader's offsets once refreshed.
	if err := view.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	var end int64
	for _, name := range view.Partitions() {
		p, _ := view.Partition(name, false)
		end += p.EndOffset()
	}
	if end != n {
		t.Fatalf("the view's partitions end at %d records in all, want %d", end, n)
	}
}
