package streams

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
	"github.com/keyline/keyline/internal/streams/broker"
	"github.com/keyline/keyline/internal/streams/objlog"
)

// testNode is one node of a test cluster: its own database connections,
// audit log, membership, change feed, HTTP listener and Service, sharing
// the database, the bucket, the KMS and IAM with the others.
type testNode struct {
	id     string
	db     *store.DB
	svc    *Service
	http   *httptest.Server
	cancel context.CancelFunc // heartbeats and feed
	down   bool
}

// testCluster is n nodes serving deployments on object storage, or on
// their local disks without a bucket.
type testCluster struct {
	*harness
	url    string
	bucket *objlog.Bucket
	nodes  []*testNode
}

func newTestCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return newTestClusterOn(t, n, true)
}

func newTestClusterOn(t *testing.T, n int, objects bool) *testCluster {
	t.Helper()
	url := storetest.URL(t)
	if url == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set: a cluster needs PostgreSQL")
	}
	var b *objlog.Bucket
	if objects {
		b, _ = testBucket(t)
	}
	k := newTestKMS()
	h := &harness{t: t, dir: t.TempDir(), master: mustSeal(t), kms: k, iam: newTestIAM(k), tasks: &testTasks{}, states: &testStates{}}
	c := &testCluster{harness: h, url: url, bucket: b}
	for i := range n {
		c.nodes = append(c.nodes, c.startNode(fmt.Sprintf("node-%d", i)))
	}
	h.svc, h.db = c.nodes[0].svc, c.nodes[0].db
	return c
}

func (c *testCluster) startNode(id string) *testNode {
	t := c.t
	ctx, cancel := context.WithCancel(context.Background())
	db, err := store.Open(ctx, filepath.Join(c.dir, id), c.url)
	if err != nil {
		t.Fatal(err)
	}
	al, err := audit.New(ctx, db, clock.Real{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	n := &testNode{id: id, db: db, cancel: cancel}
	var handler atomic.Pointer[http.Handler]
	n.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := handler.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "starting", http.StatusServiceUnavailable)
	}))
	members, err := cluster.Join(ctx, db, id, n.http.URL, func() bool { return false }, func() bool { return true }, nil)
	if err != nil {
		t.Fatal(err)
	}
	feed, err := cluster.NewFeed(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := Config{DB: db, Audit: al, Keys: c.kms, Identity: c.iam, Tasks: c.tasks, States: c.states, MasterKey: c.master,
		DataDir: filepath.Join(c.dir, id, "data"), AdminURL: n.http.URL, PollInterval: 20 * time.Millisecond, EventWait: 500 * time.Millisecond,
		Logger: logger, Members: members, Feed: feed}
	if c.bucket != nil {
		cfg.ObjectStore = c.bucket
	}
	svc, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	feed.Start(ctx)
	if err := svc.Start(ctx); err != nil {
		t.Fatal(err)
	}
	n.svc = svc
	hd := svc.Handler()
	handler.Store(&hd)
	t.Cleanup(func() { c.stopNode(n, false) })
	return n
}

// stopNode stops a node: cleanly (its leases released), or as if killed:
// its database connections are cut first, so it releases nothing and its
// leases lapse.
func (c *testCluster) stopNode(n *testNode, kill bool) {
	if n.down {
		return
	}
	n.down = true
	n.http.Close()
	if !kill {
		n.svc.Close()
		n.cancel()
		n.db.Close()
		return
	}
	n.cancel()
	n.db.Close()
	// What is left of the process winds down in the background, as a
	// killed one would not at all (its in-flight produce requests time
	// out rather than fail at once).
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		n.svc.Close()
	}()
	c.t.Cleanup(func() { <-closed })
}

// leaderOf is the node leading guid (nil while none does).
func (c *testCluster) leaderOf(guid string) *testNode {
	for _, n := range c.nodes {
		if n.down {
			continue
		}
		if d, err := n.svc.get("test", guid); err == nil && n.svc.leading(d) {
			return n
		}
	}
	return nil
}

// serving says whether n serves guid: a broker without a lock, over a view
// (following) or the writable log (leading).
func serving(n *testNode, guid string, following bool) bool {
	d, err := n.svc.get("test", guid)
	if err != nil {
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.brk == nil || d.lock != "" {
		return false
	}
	if following {
		return d.view != nil
	}
	return d.obj != nil
}

func (n *testNode) lockOf(guid string) string {
	d, err := n.svc.get("test", guid)
	if err != nil {
		return ""
	}
	_, lock, _ := d.snapshot()
	return lock
}

// credentials makes Manager credentials for guid through node n.
func (c *testCluster) credentials(n *testNode, guid string) (brokers []string, apikey string) {
	c.t.Helper()
	d, err := n.svc.get("test", guid)
	if err != nil {
		c.t.Fatal(err)
	}
	creds, err := n.svc.Credentials(guid, c.iam.credentials(d.account, guid, "test", auth.RoleManager))
	if err != nil {
		c.t.Fatal(err)
	}
	return creds["kafka_brokers_sasl"].([]string), creds["api_key"].(string)
}

// endpoint is n's Kafka address for guid.
func (n *testNode) endpoint(t testing.TB, guid string) string {
	t.Helper()
	d, err := n.svc.get("test", guid)
	if err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.front.ln.Addr().String()
}

// TestEveryNodeServesADeploymentWithOneLeaderOnPostgreSQL: a deployment
// provisioned on one node is served by all three, led by one; a client
// that knows only a follower's address creates a topic, produces and
// consumes; credentials list every node; a follower forwards the admin
// REST API to the leader.
func TestEveryNodeServesADeploymentWithOneLeaderOnPostgreSQL(t *testing.T) {
	c := newTestCluster(t, 3)
	inst, _ := c.provisionWithKey()
	if l := c.leaderOf(inst.GUID); l != c.nodes[0] {
		t.Fatalf("the provisioning node does not lead the deployment (%v)", l)
	}
	eventually(t, "every other node follows the new deployment", func() bool {
		return serving(c.nodes[1], inst.GUID, true) && serving(c.nodes[2], inst.GUID, true)
	})
	follower := c.nodes[1]
	brokers, apikey := c.credentials(follower, inst.GUID)
	var want []string
	for _, n := range c.nodes {
		want = append(want, n.endpoint(t, inst.GUID))
	}
	slices.Sort(brokers)
	slices.Sort(want)
	if !slices.Equal(brokers, want) {
		t.Fatalf("kafka_brokers_sasl %v, want every node's address %v", brokers, want)
	}
	cl := c.clientWith([]string{follower.endpoint(t, inst.GUID)}, "token", apikey)
	createTopic(t, cl, "orders", 2)
	produceN(t, cl, "orders", "rec", 200)
	got := consumeAll(t, c.clientWith([]string{follower.endpoint(t, inst.GUID)}, "token", apikey,
		kgo.ConsumeTopics("orders"), kgo.ConsumerGroup("billing"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), 200)
	if len(got) != 200 {
		t.Fatalf("read %d distinct records through a follower, want 200", len(got))
	}

	// A backup taken on a follower reads a read-only snapshot of what the
	// leader committed, and writes nothing.
	if err := follower.svc.ReadLog(testCtx(t), inst.GUID, func(l archive.Log) error {
		var records int64
		for _, name := range l.Partitions() {
			p, err := l.Partition(name, false)
			if err != nil {
				return err
			}
			records += p.EndOffset() - p.StartOffset()
		}
		if records != 200 {
			t.Errorf("the follower's snapshot holds %d records, want 200", records)
		}
		if e := errs.As(l.PutMeta("x", []byte("y"))); e == nil || e.Code != objlog.CodeReadOnly {
			t.Errorf("a write to the follower's snapshot: %v, want %s", e, objlog.CodeReadOnly)
		}
		return nil
	}); err != nil {
		t.Fatalf("a backup's read on a follower: %v", err)
	}

	// The admin REST API through a follower reaches the leader, which
	// creates topics and coordinates the groups.
	call := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, follower.http.URL+"/messagehub/"+inst.GUID+path, strings.NewReader(body))
		req.SetBasicAuth("token", apikey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := call(http.MethodPost, "/admin/topics", `{"name":"payments","partitions":1}`); code != http.StatusAccepted {
		t.Fatalf("create a topic through a follower: %d %s", code, body)
	}
	if code, body := call(http.MethodGet, "/admin/topics", ""); code != http.StatusOK || !strings.Contains(body, `"payments"`) || !strings.Contains(body, `"orders"`) {
		t.Fatalf("list topics through a follower: %d %s", code, body)
	}
	if code, body := call(http.MethodGet, "/admin/consumergroups", ""); code != http.StatusOK || !strings.Contains(body, `"billing"`) {
		t.Fatalf("list groups through a follower: %d %s", code, body)
	}
	// Without credentials the leader refuses it, as it would directly.
	resp, err := http.Get(follower.http.URL + "/messagehub/" + inst.GUID + "/admin/topics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("admin topics without credentials through a follower: %d", resp.StatusCode)
	}
}

// TestKilledLeaderIsReplacedAndAProducerResumesOnPostgreSQL: the leader of
// a deployment is stopped without releasing its lease while an idempotent
// producer writes; another node takes over within 10 s and the producer
// carries on: every acknowledged record is read once, none twice.
func TestKilledLeaderIsReplacedAndAProducerResumesOnPostgreSQL(t *testing.T) {
	c := newTestCluster(t, 3)
	inst, _ := c.provisionWithKey()
	eventually(t, "every node serves the deployment", func() bool {
		return serving(c.nodes[1], inst.GUID, true) && serving(c.nodes[2], inst.GUID, true)
	})
	seeds, apikey := c.credentials(c.nodes[1], inst.GUID)
	createTopic(t, c.clientWith(seeds, "token", apikey), "orders", 1)
	producer := c.clientWith(seeds, "token", apikey, kgo.RetryTimeout(60*time.Second), kgo.RecordDeliveryTimeout(60*time.Second),
		kgo.ProduceRequestTimeout(5*time.Second))

	var mu sync.Mutex
	var acked []string
	var ackedAt []time.Time
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			v := "rec-" + strconv.Itoa(i)
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			err := producer.ProduceSync(ctx, &kgo.Record{Topic: "orders", Value: []byte(v)}).FirstErr()
			cancel()
			if err != nil {
				t.Errorf("produce %s: %v", v, err)
				return
			}
			mu.Lock()
			acked, ackedAt = append(acked, v), append(ackedAt, time.Now())
			mu.Unlock()
		}
	}()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	eventually(t, "records are produced", func() bool { return count() >= 50 })

	old := c.leaderOf(inst.GUID)
	if old == nil {
		t.Fatal("no leader")
	}
	killed := time.Now()
	c.stopNode(old, true)
	var took time.Duration
	eventually(t, "another node leads the deployment", func() bool {
		if n := c.leaderOf(inst.GUID); n != nil && serving(n, inst.GUID, false) {
			took = time.Since(killed)
			return true
		}
		return false
	})
	t.Logf("a new leader serves %v after the kill", took)
	if took > 10*time.Second {
		t.Errorf("the new leader took %v, want within 10 s", took)
	}
	before := count()
	eventually(t, "the producer resumes on the new leader", func() bool { return count() >= before+50 })
	close(stop)
	<-done

	mu.Lock()
	want := slices.Clone(acked)
	if i, _ := slices.BinarySearchFunc(ackedAt, killed, func(a, k time.Time) int { return a.Compare(k) }); i < len(ackedAt) {
		t.Logf("the producer's first acknowledgement after the kill came %v after it", ackedAt[i].Sub(killed))
	}
	mu.Unlock()
	var seeds2 []string
	for _, n := range c.nodes {
		if !n.down {
			seeds2 = append(seeds2, n.endpoint(t, inst.GUID))
		}
	}
	reader := c.clientWith(seeds2, "token", apikey, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := consumeAll(t, reader, len(want))
	for _, v := range want {
		if got[v] != 1 {
			t.Errorf("acknowledged record %s read %d times, want once", v, got[v])
		}
	}
	for v, k := range got {
		if k > 1 {
			t.Errorf("record %s read %d times", v, k)
		}
	}
}

// TestDisablingTheKeyLocksEveryNodeOnPostgreSQL: the leader handles the
// key's disable event; every follower closes its connections and refuses
// logins with the same reason, and is served again once the key is
// enabled.
func TestDisablingTheKeyLocksEveryNodeOnPostgreSQL(t *testing.T) {
	c := newTestCluster(t, 3)
	inst, key := c.provisionWithKey()
	eventually(t, "every node serves the deployment", func() bool {
		return serving(c.nodes[1], inst.GUID, true) && serving(c.nodes[2], inst.GUID, true)
	})
	_, apikey := c.credentials(c.nodes[2], inst.GUID)
	follower := c.nodes[2]
	cl := c.clientWith([]string{follower.endpoint(t, inst.GUID)}, "token", apikey)
	createTopic(t, cl, "orders", 1)

	ids := c.kms.act(t, key, ActionDisable)
	ack := c.waitAck(ids[0])
	if ack.State != DEKDisabled {
		t.Fatalf("ack %+v: want DEK_DISABLED", ack)
	}
	leaderLock := c.nodes[0].lockOf(inst.GUID)
	if !strings.Contains(leaderLock, "is disabled") {
		t.Fatalf("the leader's lock %q", leaderLock)
	}
	acked := time.Now()
	eventually(t, "every follower locks with the leader's reason", func() bool {
		return c.nodes[1].lockOf(inst.GUID) == leaderLock && follower.lockOf(inst.GUID) == leaderLock
	})
	t.Logf("followers locked %v after the acknowledgement", time.Since(acked))
	// A login at a follower is refused with the reason.
	locked := c.clientWith([]string{follower.endpoint(t, inst.GUID)}, "token", apikey)
	err := locked.Ping(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "is disabled") {
		t.Fatalf("a login at a follower of a locked deployment: %v", err)
	}

	ids = c.kms.act(t, key, ActionEnable)
	c.waitAck(ids[0])
	eventually(t, "every follower serves again", func() bool {
		return serving(c.nodes[1], inst.GUID, true) && serving(follower, inst.GUID, true)
	})
	produceN(t, c.clientWith([]string{follower.endpoint(t, inst.GUID)}, "token", apikey), "orders", "after", 10)
}

// TestADeploymentStartsAndStopsOnEveryNodeOnPostgreSQL: suspending,
// restoring and reclaiming on one node reach the others.
func TestADeploymentStartsAndStopsOnEveryNodeOnPostgreSQL(t *testing.T) {
	c := newTestCluster(t, 2)
	inst, _ := c.provisionWithKey()
	other := c.nodes[1]
	eventually(t, "the other node follows", func() bool { return serving(other, inst.GUID, true) })
	ctx := testCtx(t)
	if err := c.nodes[0].svc.Suspend(ctx, inst.GUID); err != nil {
		t.Fatal(err)
	}
	hasFront := func(n *testNode) bool {
		d, err := n.svc.get("test", inst.GUID)
		if err != nil {
			return false
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.front != nil
	}
	eventually(t, "the other node stops listening", func() bool { return !hasFront(other) })
	if err := other.svc.Resume(ctx, inst.GUID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "both nodes serve the restored deployment", func() bool {
		return hasFront(c.nodes[0]) && c.nodes[0].lockOf(inst.GUID) == "" && hasFront(other) && other.lockOf(inst.GUID) == ""
	})
	if err := c.nodes[0].svc.Suspend(ctx, inst.GUID); err != nil {
		t.Fatal(err)
	}
	if err := c.nodes[0].svc.Reclaim(ctx, inst.GUID); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the other node forgets the deployment", func() bool {
		_, err := other.svc.get("test", inst.GUID)
		return err != nil
	})
}

// TestOnlyTheLeaderServesALocalDiskDeploymentOnPostgreSQL: without object
// storage a deployment's data is on one node's disk: that node alone
// serves it, the others refuse logins saying so and never take its lease,
// even once it stopped.
func TestOnlyTheLeaderServesALocalDiskDeploymentOnPostgreSQL(t *testing.T) {
	c := newTestClusterOn(t, 2, false)
	inst, _ := c.provisionWithKey()
	home, other := c.nodes[0], c.nodes[1]
	eventually(t, "the other node refuses the deployment", func() bool {
		return strings.Contains(other.lockOf(inst.GUID), "another node's local disk")
	})
	brokers, apikey := c.credentials(other, inst.GUID)
	if want := []string{home.endpoint(t, inst.GUID)}; !slices.Equal(brokers, want) {
		t.Fatalf("kafka_brokers_sasl %v, want the data's node only %v", brokers, want)
	}
	cl := c.clientWith(brokers, "token", apikey)
	createTopic(t, cl, "orders", 1)
	produceN(t, cl, "orders", "rec", 20)
	err := c.clientWith([]string{other.endpoint(t, inst.GUID)}, "token", apikey).Ping(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "another node's local disk") {
		t.Fatalf("a login at the other node: %v", err)
	}

	c.stopNode(home, false)
	deadline := time.Now().Add(3 * deploymentLeaseTTL)
	for time.Now().Before(deadline) {
		if d, err := other.svc.get("test", inst.GUID); err == nil && other.svc.leading(d) {
			t.Fatal("a node without the deployment's data took its lease")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Its admin REST API says that no node leads it, in that API's shape.
	req, _ := http.NewRequest(http.MethodGet, other.http.URL+"/messagehub/"+inst.GUID+"/admin/topics", nil)
	req.SetBasicAuth("token", apikey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusServiceUnavailable || body.Code != "NO_LEADER" {
		t.Fatalf("admin REST without a leader: %d %+v %v", resp.StatusCode, body, err)
	}
}

// TestLapsedLeasesSpreadOverTheLiveNodes: for each deployment exactly one
// live node, never the lapsed holder, takes its lease at once, and the
// deployments of a dead node spread over the others.
func TestLapsedLeasesSpreadOverTheLiveNodes(t *testing.T) {
	db := storetest.Open(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	live := []cluster.Node{{ID: "node-a"}, {ID: "node-b"}, {ID: "node-c"}}
	svcs := map[string]*Service{}
	for _, n := range live {
		m, err := cluster.Join(ctx, db, n.ID, "http://"+n.ID, func() bool { return false }, func() bool { return true }, nil)
		if err != nil {
			t.Fatal(err)
		}
		svcs[n.ID] = &Service{cl: &clusterState{members: m, objects: true, live: live, liveAt: time.Now().Add(time.Hour)}}
	}
	led := map[string]int{}
	for i := range 300 {
		d := &deployment{guid: fmt.Sprintf("00000000-0000-0000-0000-%012d", i)}
		for _, last := range []string{"", "node-a"} {
			var takers []string
			for id, s := range svcs {
				if s.leaseDefer(d, last) == 0 {
					takers = append(takers, id)
				}
			}
			if len(takers) != 1 || takers[0] == last {
				t.Fatalf("deployment %s, last held by %q: taken at once by %v, want one other node", d.guid, last, takers)
			}
			if last != "" {
				led[takers[0]]++
			}
		}
	}
	if led["node-b"] < 100 || led["node-c"] < 100 {
		t.Fatalf("a dead node's 300 deployments went %v, want them spread", led)
	}
	// Alone, the last holder takes its lease back at once.
	alone := svcs["node-a"]
	alone.cl.live = live[:1]
	if got := alone.leaseDefer(&deployment{guid: "x"}, "node-a"); got != 0 {
		t.Fatalf("the only live node defers its own lapsed lease by %v", got)
	}
}

// metaCounter counts the metadata writes that reach a deployment's storage.
type metaCounter struct {
	broker.Storage
	puts atomic.Int64
}

func (m *metaCounter) PutMeta(string, []byte) error { m.puts.Add(1); return nil }

// TestALeaderPastItsLeaseWritesNoMetadataOnPostgreSQL: a leader's
// metadata writes go through only while it counts on the deployment's
// lease; one paused past it (no renewal) writes nothing more, and the
// next node takes the lease.
func TestALeaderPastItsLeaseWritesNoMetadataOnPostgreSQL(t *testing.T) {
	url := storetest.URL(t)
	if url == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set: leases only matter on PostgreSQL")
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	node := func(id string) *Service {
		db := storetest.OpenAt(t, t.TempDir(), url)
		m, err := cluster.Join(ctx, db, id, "http://"+id, func() bool { return false }, func() bool { return true }, nil)
		if err != nil {
			t.Fatal(err)
		}
		return &Service{db: db, cl: &clusterState{db: db, members: m, objects: true}}
	}
	a, b := node("node-a"), node("node-b")
	da, db := &deployment{guid: "g-1"}, &deployment{guid: "g-1"}
	da.lease, db.lease = a.newLease(da), b.newLease(db)
	meta := &metaCounter{}
	st := leaderStorage{Storage: meta, s: a, d: da}
	da.leader = true
	if err := st.PutMeta("k", nil); errs.KindOf(err) != errs.Conflict || meta.puts.Load() != 0 {
		t.Fatalf("a write without the lease: %v, %d writes", err, meta.puts.Load())
	}
	if held, err := da.lease.TryAcquire(ctx); err != nil || !held {
		t.Fatalf("node a: held %v, %v", held, err)
	}
	if err := st.PutMeta("k", nil); err != nil || meta.puts.Load() != 1 {
		t.Fatalf("the leader's write: %v, %d writes", err, meta.puts.Load())
	}
	// Node a renews no more, as if paused: its writes stop before the lease
	// lapses, and node b takes it once it has.
	eventually(t, "the paused leader's writes are refused", func() bool { return st.PutMeta("k", nil) != nil })
	if n := meta.puts.Load(); n < 1 {
		t.Fatalf("%d writes", n)
	}
	if h, err := b.cl.members.Holder(ctx, deploymentLease("g-1")); err != nil || h != "node-a" {
		t.Fatalf("the lease is held by %q (%v) when node a stops writing, want still node-a", h, err)
	}
	eventually(t, "node b takes the lapsed lease", func() bool {
		held, err := db.lease.TryAcquire(ctx)
		return err == nil && held
	})
	before := meta.puts.Load()
	if err := st.PutMeta("k", nil); err == nil || meta.puts.Load() != before {
		t.Fatalf("the old leader wrote after node b took over: %v", err)
	}
}

// A node's address is in the deployment's credentials as soon as it is
// saved, though a look at the deployment's brokers taken before (while it
// was being provisioned) is cached: CI once minted credentials naming no
// broker at all.
func TestSavedEndpointIsListedAtOnceOnPostgreSQL(t *testing.T) {
	c := newTestCluster(t, 1)
	inst, _ := c.provisionWithKey()
	n := c.nodes[0]
	want := n.endpoint(t, inst.GUID)
	n.svc.cl.mu.Lock()
	n.svc.cl.brokers[inst.GUID] = cachedBrokers{at: time.Now()} // looked at before the address was saved
	n.svc.cl.mu.Unlock()
	port, _ := strconv.Atoi(want[strings.LastIndex(want, ":")+1:])
	if err := n.svc.saveEndpoint(testCtx(t), inst.GUID, port); err != nil {
		t.Fatal(err)
	}
	if got := n.svc.clusterAddrs(inst.GUID); !slices.Equal(got, []string{want}) {
		t.Fatalf("brokers %v right after the endpoint was saved, want %v", got, want)
	}
}
