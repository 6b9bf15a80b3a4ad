package e2e

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/scantest"
	"github.com/keyline/keyline/internal/store/storetest"
)

// objectCluster is three `keyline serve` processes on one PostgreSQL schema
// keeping deployments' data in one versitygw bucket: the deployment of
// docs/cluster.md, where every node serves every deployment and one node
// (the holder of the lease deployment/<guid>) leads each.
type objectCluster struct {
	t           *testing.T
	databaseURL string
	keyFile     string
	s3          *volumetest.S3Server
	nodes       []*clusterNode // nodes[i] is node-<i+1>
	dirs        []string
}

// startObjectCluster starts versitygw and n nodes. Node i binds and
// advertises its Kafka listeners on 127.0.0.<i+1> (every 127/8 address is
// this host's loopback), so a broker address says which node it is and a
// client can be pointed at one node alone.
func startObjectCluster(t *testing.T, databaseURL string, n int) *objectCluster {
	t.Helper()
	c := &objectCluster{t: t, databaseURL: databaseURL, keyFile: filepath.Join(t.TempDir(), "master.key"), s3: volumetest.StartS3(t)}
	for i := range n {
		c.dirs = append(c.dirs, t.TempDir())
		c.nodes = append(c.nodes, nil)
		// One after the other: the first creates the master key file and
		// the schema; the others find both.
		c.start(i)
	}
	return c
}

// kafkaHost is the loopback address node i's Kafka listeners use.
func kafkaHost(i int) string { return fmt.Sprintf("127.0.0.%d", i+1) }

// start (re)starts node i on its own data directory, under its node id.
func (c *objectCluster) start(i int) {
	c.t.Helper()
	id := fmt.Sprintf("node-%d", i+1)
	p := serveProcessWith(c.t, c.dirs[i], serveOptions{
		args: []string{"--node-id", id, "--database-url", c.databaseURL,
			"--object-store", "s3://keyline-e2e?endpoint=http://" + c.s3.Endpoint + "&region=us-east-1",
			"--kafka-host", kafkaHost(i), "--kafka-advertised-host", kafkaHost(i)},
		env: []string{"KEYLINE_MASTER_KEY_FILE=" + c.keyFile, "AWS_ACCESS_KEY_ID=" + c.s3.AccessKey, "AWS_SECRET_ACCESS_KEY=" + c.s3.SecretKey}})
	c.nodes[i] = &clusterNode{id: id, proc: p, admin: &api{t: c.t, c: client.New(p.url, adminKey)}}
}

// alive reports whether node i's process runs.
func (c *objectCluster) alive(i int) bool { return c.nodes[i].proc.cmd.ProcessState == nil }

// kill stops node i with SIGKILL.
func (c *objectCluster) kill(i int) { c.nodes[i].proc.kill() }

// api is the admin API through the first live node, failing t.
func (c *objectCluster) api(t *testing.T) *api {
	for i := range c.nodes {
		if c.alive(i) {
			return c.on(t, i)
		}
	}
	t.Fatal("no node is alive")
	return nil
}

// on is the admin API through node i, failing t.
func (c *objectCluster) on(t *testing.T, i int) *api { return &api{t: t, c: c.nodes[i].admin.c} }

// leader is the index of the node holding deployment guid's lease, as GET
// /v1/cluster/nodes lists it, or -1.
func (c *objectCluster) leader(t *testing.T, guid string) int {
	var out struct {
		Nodes []struct {
			ID     string   `json:"id"`
			Leases []string `json:"leases"`
		} `json:"nodes"`
	}
	if err := c.api(t).do("GET", "/v1/cluster/nodes", nil, nil, &out); err != nil {
		return -1
	}
	for _, n := range out.Nodes {
		if slices.Contains(n.Leases, "deployment/"+guid) {
			for i, cn := range c.nodes {
				if cn.id == n.ID {
					return i
				}
			}
		}
	}
	return -1
}

// waitLeader waits until a live node leads deployment guid.
func (c *objectCluster) waitLeader(t *testing.T, guid string) int {
	t.Helper()
	at := -1
	waitFor(t, 30*time.Second, "a node to lead the deployment", func() bool {
		at = c.leader(t, guid)
		return at >= 0 && c.alive(at)
	})
	return at
}

// followers are the live nodes other than the deployment's leader.
func (c *objectCluster) followers(t *testing.T, guid string) (leader int, followers []int) {
	t.Helper()
	leader = c.waitLeader(t, guid)
	for i := range c.nodes {
		if i != leader && c.alive(i) {
			followers = append(followers, i)
		}
	}
	return leader, followers
}

// broker is node i's Kafka address for the deployment, as GET
// /messagehub/{guid} lists it (a restarted node lists it again once its
// listener runs).
func (c *objectCluster) broker(t *testing.T, guid string, i int) string {
	t.Helper()
	addr := ""
	waitFor(t, 30*time.Second, fmt.Sprintf("node-%d's Kafka address in the deployment's brokers", i+1), func() bool {
		var info map[string]any
		if c.api(t).do("GET", client.Path("messagehub", guid), nil, nil, &info) != nil {
			return false
		}
		list, _ := info["kafka_brokers_sasl"].([]any)
		for _, b := range list {
			if host, _, err := net.SplitHostPort(b.(string)); err == nil && host == kafkaHost(i) {
				addr = b.(string)
				return true
			}
		}
		return false
	})
	return addr
}

// brokers are every live node's Kafka address for the deployment.
func (c *objectCluster) brokers(t *testing.T, guid string) []string {
	t.Helper()
	var out []string
	for i := range c.nodes {
		if c.alive(i) {
			out = append(out, c.broker(t, guid, i))
		}
	}
	return out
}

// at is c bootstrapping at these addresses only.
func (c kafkaCreds) at(addrs ...string) kafkaCreds {
	c.Brokers = slices.Clone(addrs)
	return c
}

// TestThreeNodesServeEveryDeploymentOnPostgreSQL runs Event Streams on three
// nodes sharing PostgreSQL and an S3 bucket (issue 14): every node serves
// every deployment, one node leads it, and Kafka clients reach the
// deployment through any node, across a leader killed with SIGKILL, a
// PostgreSQL restart and an object store outage, and the key events of the
// deployment's root key act on every node.
func TestThreeNodesServeEveryDeploymentOnPostgreSQL(t *testing.T) {
	databaseURL := storetest.URL(t)
	if databaseURL == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set")
	}
	started := time.Now()
	c := startObjectCluster(t, databaseURL, 3)
	kp := c.api(t).keyProtect("cluster14-kp")
	t.Logf("three nodes and versitygw started in %v", time.Since(started).Round(time.Millisecond))

	t.Run("franz-go and kcat produce through one node and consume through another", func(t *testing.T) { throughNodesScenario(t, c, kp) })
	t.Run("a consumer group with a member at each node is one group", func(t *testing.T) { groupAcrossNodesScenario(t, c, kp) })
	t.Run("kill -9 of the leader during an idempotent produce", func(t *testing.T) {
		failoverScenario(t, c, kp, disruption{name: "ledger-kill", what: "the leader killed with SIGKILL",
			do: func(t *testing.T, leader int) (time.Time, func()) {
				c.kill(leader)
				return time.Now(), func() { c.start(leader) }
			}})
	})
	t.Run("PostgreSQL restarted during an idempotent produce", func(t *testing.T) {
		restart := postgresRestarter(t)
		failoverScenario(t, c, kp, disruption{name: "ledger-pg", what: "PostgreSQL restarted",
			do: func(t *testing.T, _ int) (time.Time, func()) {
				took := restart()
				t.Logf("pg_ctl restart took %v", took.Round(time.Millisecond))
				return time.Now(), func() {}
			}})
	})
	t.Run("the object store stopped for 10 s during an idempotent produce", func(t *testing.T) {
		failoverScenario(t, c, kp, disruption{name: "ledger-s3", what: "the object store restarted", quiet: true,
			do: func(t *testing.T, _ int) (time.Time, func()) {
				c.s3.Stop()
				time.Sleep(10 * time.Second)
				restarted := time.Now()
				c.s3.Start()
				return restarted, func() {}
			}})
	})
	t.Run("disable locks every node and enable unlocks", func(t *testing.T) { disableAcrossNodesScenario(t, c, kp) })
	t.Run("force delete shreds on every node", func(t *testing.T) { forceDeleteAcrossNodesScenario(t, c, kp) })
	t.Run("rotation interrupted by kill -9 of the node running its task resumes on another node", func(t *testing.T) {
		rotationAcrossNodesScenario(t, c, kp)
	})
	t.Logf("the whole test took %v", time.Since(started).Round(time.Millisecond))
}

// throughNodesScenario: a producer that knows only one follower and a
// consumer that knows only the other reach the leader through the Metadata
// the followers answer, with franz-go and with kcat (librdkafka).
func throughNodesScenario(t *testing.T, c *objectCluster, kp string) {
	dep := c.api(t).provisionDeployment(kp, "through")
	leader, fs := c.followers(t, dep.guid)
	if len(fs) != 2 {
		t.Fatalf("followers %v of leader node-%d, want two", fs, leader+1)
	}
	in, out := c.broker(t, dep.guid, fs[0]), c.broker(t, dep.guid, fs[1])
	t.Logf("node-%d leads; producing through node-%d (%s), consuming through node-%d (%s)", leader+1, fs[0]+1, in, fs[1]+1, out)

	// Every node's Metadata lists the three nodes as brokers.
	for i := range c.nodes {
		meta, errOut, err := kcat(t, dep.reader.at(c.broker(t, dep.guid, i)), "", "-L")
		if err != nil {
			t.Fatalf("kcat -L through node-%d: %v\n%s", i+1, err, errOut)
		}
		for j := range c.nodes {
			if !strings.Contains(meta, kafkaHost(j)+":") {
				t.Fatalf("kcat -L through node-%d does not list node-%d (%s):\n%s", i+1, j+1, kafkaHost(j), meta)
			}
		}
	}

	createTopic(t, dep.manager.at(in), "through", 3)
	values := numbered("franz", 0, 300)
	produceValues(t, franz(t, dep.writer.at(in)), "through", values)
	cons := franz(t, dep.reader.at(out), kgo.ConsumeTopics("through"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := consumeRecords(t, cons, len(values))
	if err := sameSet(recordValues(got), values); err != nil {
		t.Fatalf("franz-go through node-%d: %v", fs[1]+1, err)
	}
	inOrder(t, got)

	// kcat as it comes, then as an idempotent producer (librdkafka asks any
	// broker it is connected to, here the follower, for a producer id).
	want := slices.Clone(values)
	for _, c := range []struct {
		name  string
		extra []string
	}{{"kcat", nil}, {"kcat-idempotent", []string{"-X", "enable.idempotence=true", "-X", "message.timeout.ms=20000"}}} {
		lines := numbered(c.name, 0, 100)
		if _, errOut, err := kcat(t, dep.writer.at(in), strings.Join(lines, "\n")+"\n", append([]string{"-P", "-t", "through"}, c.extra...)...); err != nil || strings.Contains(errOut, "ERROR") {
			t.Errorf("%s -P through node-%d: %v\n%s", c.name, fs[0]+1, err, firstLines(errOut, 3))
			continue
		}
		want = append(want, lines...)
	}
	read, errOut, err := kcat(t, dep.reader.at(out), "", "-C", "-t", "through", "-o", "beginning", "-e", "-f", "%s\n")
	if err != nil {
		t.Fatalf("kcat -C through node-%d: %v\n%s", fs[1]+1, err, errOut)
	}
	if err := sameSet(strings.Fields(read), want); err != nil {
		t.Fatalf("kcat -C through node-%d: %v", fs[1]+1, err)
	}
}

// firstLines is the first n lines of s.
func firstLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// inOrder fails unless each partition's values (numbered) come in the order
// they were produced.
func inOrder(t *testing.T, rs []*kgo.Record) {
	t.Helper()
	for p, vs := range valuesOf(t, rs) {
		if !slices.IsSorted(vs) {
			t.Fatalf("partition %d is out of produce order: %v", p, vs)
		}
	}
}

// groupAcrossNodesScenario: three members of one group, each bootstrapped
// at another node, form one group (one coordinator: the leader) and
// consume every record once.
func groupAcrossNodesScenario(t *testing.T, c *objectCluster, kp string) {
	dep := c.api(t).provisionDeployment(kp, "grouped")
	all := c.brokers(t, dep.guid)
	createTopic(t, dep.manager.at(all...), "work", 6)
	var members []*kgo.Client
	for i := range c.nodes {
		members = append(members, franz(t, dep.reader.at(c.broker(t, dep.guid, i)), kgo.ConsumeTopics("work"), kgo.ConsumerGroup("workers"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(200*time.Millisecond)))
	}
	adm := kadm.NewClient(franz(t, dep.manager.at(all...)))
	waitFor(t, 60*time.Second, "the three members to share the six partitions in one group", func() bool {
		for _, m := range members {
			pollOnce(m)
		}
		described, err := adm.DescribeGroups(testCtx(t), "workers")
		if err != nil {
			return false
		}
		g := described["workers"]
		if g.Err != nil || g.State != "Stable" || len(g.Members) != 3 {
			return false
		}
		assigned := 0
		for _, m := range g.Members {
			if ca, ok := m.Assigned.AsConsumer(); ok {
				for _, tp := range ca.Topics {
					assigned += len(tp.Partitions)
				}
			}
		}
		return assigned == 6
	})

	values := make([]string, 600)
	prod := franz(t, dep.writer.at(all...), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx := testCtx(t)
	for i := range values {
		values[i] = fmt.Sprintf("job-%05d", i)
		prod.Produce(ctx, &kgo.Record{Topic: "work", Partition: int32(i % 6), Value: []byte(values[i])}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	// Each member polls on its own: all three read (two partitions each),
	// and together they read every record once.
	var mu sync.Mutex
	var got []string
	per := make([]int, len(members))
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Go(func() {
			for ctx.Err() == nil {
				fs := m.PollFetches(ctx)
				mu.Lock()
				got = append(got, recordValues(fs.Records())...)
				per[i] += fs.NumRecords()
				if len(got) >= len(values) {
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := sameSet(got, values); err != nil {
		t.Fatalf("the group across three nodes: %v", err)
	}
	for i, n := range per {
		if n == 0 {
			t.Fatalf("the member bootstrapped at node-%d read nothing (per member: %v)", i+1, per)
		}
	}
	t.Logf("records read per member (node-1, node-2, node-3): %v", per)
}

// ledger is a franz-go producer that knows every node, producing numbered
// records to three partitions with acks=all and idempotence until stopped,
// and noting which broker acknowledged each batch when.
type ledger struct {
	mu     sync.Mutex
	saw    []string // the client's warnings and errors, the first of each kind
	acked  map[string]bool
	writes []ledgerWrite
	failed []error
	cancel context.CancelFunc
	done   chan struct{}
	prod   *kgo.Client
}

type ledgerWrite struct {
	at   time.Time
	host string
}

// Level and Log make the ledger the client's logger, noting its warnings
// and errors (retriable errors from the brokers, lost connections).
func (l *ledger) Level() kgo.LogLevel { return kgo.LogLevelWarn }

func (l *ledger) Log(_ kgo.LogLevel, msg string, keyvals ...any) {
	line := msg
	for i := 0; i+1 < len(keyvals); i += 2 {
		if k := fmt.Sprint(keyvals[i]); k == "err" || k == "error" {
			line += ": " + fmt.Sprint(keyvals[i+1])
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.saw) < 8 && !slices.Contains(l.saw, line) {
		l.saw = append(l.saw, line)
	}
}

// sawErrors is what the client logged, or "nothing".
func (l *ledger) sawErrors() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.saw) == 0 {
		return "nothing"
	}
	return strings.Join(l.saw, "; ")
}

func (l *ledger) OnProduceBatchWritten(meta kgo.BrokerMetadata, _ string, _ int32, _ kgo.ProduceBatchMetrics) {
	l.mu.Lock()
	l.writes = append(l.writes, ledgerWrite{time.Now(), meta.Host})
	l.mu.Unlock()
}

const ledgerPartitions = 3

func startLedger(t *testing.T, w kafkaCreds, topic string) *ledger {
	l := &ledger{acked: map[string]bool{}, done: make(chan struct{})}
	l.prod = franz(t, w, kgo.DefaultProduceTopic(topic), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordDeliveryTimeout(90*time.Second), kgo.WithHooks(l), kgo.WithLogger(l))
	ctx, cancel := context.WithCancel(context.Background())
	l.cancel = cancel
	go func() {
		defer close(l.done)
		for i := 0; ctx.Err() == nil; i++ {
			if i%50 == 49 {
				time.Sleep(10 * time.Millisecond) // at most about 5,000 records/s: enough, and kind to a shared machine
			}
			part := int32(i % ledgerPartitions)
			v := fmt.Sprintf("p%d-%08d", part, i/ledgerPartitions)
			l.prod.Produce(ctx, &kgo.Record{Partition: part, Value: []byte(v)}, func(_ *kgo.Record, err error) {
				l.mu.Lock()
				defer l.mu.Unlock()
				switch {
				case err == nil:
					l.acked[v] = true
				case !errors.Is(err, context.Canceled):
					l.failed = append(l.failed, err)
				}
			})
		}
	}()
	t.Cleanup(func() { cancel(); <-l.done })
	return l
}

func (l *ledger) ackedCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.acked)
}

// firstWriteAfter is the first acknowledged batch after at from a broker
// other than host ("" for any).
func (l *ledger) firstWriteAfter(at time.Time, notHost string) (ledgerWrite, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, w := range l.writes {
		if w.at.After(at) && w.host != notHost {
			return w, true
		}
	}
	return ledgerWrite{}, false
}

// writesBetween counts the batches acknowledged between from and to.
func (l *ledger) writesBetween(from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, w := range l.writes {
		if w.at.After(from) && w.at.Before(to) {
			n++
		}
	}
	return n
}

// stop ends production, waits for every record to be acknowledged or to
// fail, and returns the acknowledged ones.
func (l *ledger) stop(t *testing.T) map[string]bool {
	t.Helper()
	l.cancel()
	<-l.done
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := l.prod.Flush(ctx); err != nil {
		t.Fatalf("flushing the producer: %v", err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failed) > 0 {
		t.Errorf("%d records failed instead of being retried until acknowledged; first: %v", len(l.failed), l.failed[0])
	}
	return l.acked
}

// checkLedger reads the whole topic through r and fails unless every
// acknowledged record is there exactly once and each partition holds its
// records in produce order.
func checkLedger(t *testing.T, r kafkaCreds, topic string, acked map[string]bool) {
	t.Helper()
	offs, err := kadm.NewClient(franz(t, r)).ListEndOffsets(testCtx(t), topic)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	offs.Each(func(o kadm.ListedOffset) { total += int(o.Offset) })
	got := consumeRecords(t, franz(t, r, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), total)
	stored := map[string]bool{}
	last := map[int32]string{}
	for _, rec := range got {
		v := string(rec.Value)
		if stored[v] {
			t.Fatalf("%s is stored twice", v)
		}
		stored[v] = true
		if !strings.HasPrefix(v, fmt.Sprintf("p%d-", rec.Partition)) {
			t.Fatalf("%s is in partition %d", v, rec.Partition)
		}
		if prev, ok := last[rec.Partition]; ok && v <= prev {
			t.Fatalf("partition %d: %s after %s: out of produce order", rec.Partition, v, prev)
		}
		last[rec.Partition] = v
	}
	lost := 0
	for v := range acked {
		if !stored[v] {
			lost++
			if lost <= 5 {
				t.Errorf("acknowledged record %s is missing", v)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged records are missing", lost, len(acked))
	}
	t.Logf("%d records acknowledged, %d stored, each once and in order", len(acked), len(stored))
}

// disruption is what failoverScenario does under a producer.
type disruption struct {
	name, what string // the deployment's name; what happened, for the log
	// do disrupts the deployment led by node leader and returns when the
	// disruption ended and how to repair the cluster afterwards.
	do func(t *testing.T, leader int) (time.Time, func())
	// quiet: nothing can be made durable meanwhile, so no batch may be
	// acknowledged from 2 s after the start (commits already under way)
	// until it ends.
	quiet bool
}

// failoverScenario produces with a client that knows every node while d
// breaks something under the deployment's leader. The producer must resume
// within 10 s (a new acknowledgement, from a live broker), and every
// acknowledged record must be read back once, in order.
func failoverScenario(t *testing.T, c *objectCluster, kp string, d disruption) {
	dep := c.api(t).provisionDeployment(kp, d.name)
	all := c.brokers(t, dep.guid)
	createTopic(t, dep.manager.at(all...), "ledger", ledgerPartitions)
	leader := c.waitLeader(t, dep.guid)
	l := startLedger(t, dep.writer.at(all...), "ledger")
	waitFor(t, 60*time.Second, "records to be acknowledged first", func() bool { return l.ackedCount() >= 3000 })
	before := l.ackedCount()
	start := time.Now()
	over, repair := d.do(t, leader)
	// The killed leader's address says which acknowledgements it could
	// still have sent; a restart or an outage has no such host.
	notHost := ""
	if !c.alive(leader) {
		notHost = kafkaHost(leader)
	}
	if n := l.writesBetween(start.Add(2*time.Second), over); d.quiet && n > 0 {
		t.Errorf("%d batches were acknowledged while %s could make nothing durable", n, d.what)
	}
	var resumed ledgerWrite
	waitFor(t, 60*time.Second, "the producer to resume", func() bool {
		var ok bool
		resumed, ok = l.firstWriteAfter(over, notHost)
		return ok
	})
	took := resumed.at.Sub(over)
	t.Logf("%s: the producer resumed %v later (acknowledged by %s); %d records acknowledged before; the client saw: %s",
		d.what, took.Round(time.Millisecond), resumed.host, before, l.sawErrors())
	if took > 10*time.Second {
		t.Errorf("the producer resumed %v after %s, want within 10 s", took, d.what)
	}
	if now := c.waitLeader(t, dep.guid); now != leader {
		t.Logf("node-%d leads the deployment now (node-%d did)", now+1, leader+1)
	}
	// More records through the new leader, then everything is read back.
	target := l.ackedCount() + 2000
	waitFor(t, 60*time.Second, "more records to be acknowledged", func() bool { return l.ackedCount() >= target })
	acked := l.stop(t)
	repair()
	checkLedger(t, dep.reader.at(c.brokers(t, dep.guid)...), "ledger", acked)
}

// postgresRestarter returns a function restarting the PostgreSQL server of
// KEYLINE_TEST_DATABASE_URL (scripts/test starts it and says where it is),
// or skips the test when this run does not own the server.
func postgresRestarter(t *testing.T) func() time.Duration {
	data, pgctl := os.Getenv("KEYLINE_TEST_PGDATA"), os.Getenv("KEYLINE_TEST_PG_CTL")
	if data == "" || pgctl == "" {
		t.Skip("KEYLINE_TEST_PGDATA and KEYLINE_TEST_PG_CTL are not set: this run does not own the PostgreSQL server, so it cannot restart it (scripts/test sets them)")
	}
	return func() time.Duration {
		t.Helper()
		args := []string{pgctl, "-D", data, "-w", "-m", "fast", "-l", filepath.Join(filepath.Dir(data), "server.log"), "restart"}
		if os.Getuid() == 0 {
			args = append([]string{"runuser", "-u", "postgres", "--"}, args...) // PostgreSQL refuses to run as root
		}
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = filepath.Dir(data)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pg_ctl restart: %v\n%s", err, out)
		}
		return time.Since(start)
	}
}

// nodeProbe sends Metadata requests to one node's Kafka listener over one
// logged-in connection, and notes when that node first refuses.
type nodeProbe struct {
	node    int
	cl      *kgo.Client
	stopped chan struct{}
	mu      sync.Mutex
	refused time.Time
	err     error
}

func probeNode(t *testing.T, r kafkaCreds, node int) *nodeProbe {
	t.Helper()
	p := &nodeProbe{node: node, stopped: make(chan struct{})}
	p.cl = franz(t, r, kgo.RetryTimeout(time.Second))
	seed := p.cl.SeedBrokers()[0]
	if _, err := seed.Request(testCtx(t), kmsg.NewPtrMetadataRequest()); err != nil {
		t.Fatalf("node-%d: %v", node+1, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
			_, err := seed.Request(rctx, kmsg.NewPtrMetadataRequest())
			rcancel()
			if err != nil && ctx.Err() == nil {
				p.mu.Lock()
				p.refused, p.err = time.Now(), err
				p.mu.Unlock()
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func (p *nodeProbe) refusedAt() (time.Time, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.refused, p.err
}

// waitRefused waits until every probe's node refused, and returns how long
// after since each did.
func waitRefused(t *testing.T, probes []*nodeProbe, since time.Time, what string) []time.Duration {
	t.Helper()
	var out []time.Duration
	for _, p := range probes {
		waitFor(t, 30*time.Second, fmt.Sprintf("node-%d to refuse the deployment's clients after %s", p.node+1, what), func() bool {
			at, _ := p.refusedAt()
			return !at.IsZero()
		})
		at, err := p.refusedAt()
		out = append(out, at.Sub(since))
		t.Logf("node-%d refused %v after %s (%v)", p.node+1, at.Sub(since).Round(time.Millisecond), what, err)
	}
	return out
}

// loginOn tries a new Kafka login through node address addr alone.
func loginOn(t *testing.T, r kafkaCreds, addr string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cl := franz(t, r.at(addr), kgo.RetryTimeout(time.Second))
	defer cl.Close()
	_, err := cl.SeedBrokers()[0].Request(ctx, kmsg.NewPtrMetadataRequest())
	return err
}

// disableAcrossNodesScenario: disabling the deployment's root key locks its
// listener on every node within a second (connections closed, logins
// refused with the reason), and enabling it unlocks them all.
func disableAcrossNodesScenario(t *testing.T, c *objectCluster, kp string) {
	admin := c.api(t)
	dep := admin.provisionDeployment(kp, "locking")
	all := c.brokers(t, dep.guid)
	createTopic(t, dep.manager.at(all...), "vault", 2)
	values := numbered("entry", 0, 100)
	produceValues(t, franz(t, dep.writer.at(all...)), "vault", values)
	var probes []*nodeProbe
	for i := range c.nodes {
		probes = append(probes, probeNode(t, dep.reader.at(c.broker(t, dep.guid, i)), i))
	}

	admin.must("POST", client.Path("api", "v2", "keys", dep.keyID, "actions", "disable"), kpHeader(kp), map[string]any{})
	for i, took := range waitRefused(t, probes, time.Now(), "the disable") {
		if took > time.Second {
			t.Errorf("node-%d kept serving the deployment %v after its key was disabled, want within a second", i+1, took)
		}
	}
	for i := range c.nodes {
		if err := loginOn(t, dep.reader, c.broker(t, dep.guid, i)); err == nil || !strings.Contains(err.Error(), "disabled") {
			t.Errorf("a new login through node-%d while the key is disabled: %v, want a refusal that says the key is disabled", i+1, err)
		}
		var info map[string]any
		if err := c.on(t, i).do("GET", client.Path("messagehub", dep.guid), nil, nil, &info); err != nil || info["state"] != "inactive" {
			t.Errorf("node-%d shows the deployment as %v (%v)", i+1, info["state"], err)
		}
	}

	admin.must("POST", client.Path("api", "v2", "keys", dep.keyID, "actions", "enable"), kpHeader(kp), map[string]any{})
	for i := range c.nodes {
		addr := c.broker(t, dep.guid, i)
		waitFor(t, 30*time.Second, fmt.Sprintf("node-%d to take logins again", i+1), func() bool { return loginOn(t, dep.reader, addr) == nil })
	}
	_, fs := c.followers(t, dep.guid)
	cons := franz(t, dep.reader.at(c.broker(t, dep.guid, fs[0])), kgo.ConsumeTopics("vault"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err := sameSet(recordValues(consumeRecords(t, cons, len(values))), values); err != nil {
		t.Fatalf("after enable, through node-%d: %v", fs[0]+1, err)
	}
}

// forceDeleteAcrossNodesScenario: a force delete of the root key shreds
// the deployment: no node serves its data any more (logins refused saying
// the key was deleted, the admin REST API refuses), while its metadata
// (the deployment and the resource instance) stays readable through every
// node, and the bucket never held a record in plain form.
func forceDeleteAcrossNodesScenario(t *testing.T, c *objectCluster, kp string) {
	admin := c.api(t)
	dep := admin.provisionDeployment(kp, "shredding")
	all := c.brokers(t, dep.guid)
	createTopic(t, dep.manager.at(all...), "patients", 2)
	canary := fmt.Sprintf("CANARY-%d", time.Now().UnixNano())
	values := numbered(canary, 0, 200)
	produceValues(t, franz(t, dep.writer.at(all...)), "patients", values)
	var probes []*nodeProbe
	for i := range c.nodes {
		probes = append(probes, probeNode(t, dep.reader.at(c.broker(t, dep.guid, i)), i))
	}

	admin.must("DELETE", client.Path("api", "v2", "keys", dep.keyID)+"?force=true", kpHeader(kp), nil)
	waitRefused(t, probes, time.Now(), "the force delete")
	for i := range c.nodes {
		n := c.on(t, i)
		if err := loginOn(t, dep.reader, all[i]); err == nil || !strings.Contains(err.Error(), "deleted") {
			t.Errorf("a login through node-%d after the key was deleted: %v, want a refusal that says the key was deleted", i+1, err)
		}
		var info map[string]any
		if err := n.do("GET", client.Path("messagehub", dep.guid), nil, nil, &info); err != nil || info["state"] != "inactive" ||
			!strings.Contains(fmt.Sprint(info["state_reason"]), "deleted") || info["disk_encryption_key_crn"] != dep.keyCRN {
			t.Errorf("node-%d shows the deployment after its key was deleted as %s (%v)", i+1, dump(info), err)
		}
		if inst := n.must("GET", client.Path("v2", "resource_instances", dep.guid), nil, nil); inst["crn"] != dep.crn {
			t.Errorf("node-%d: resource instance after the key was deleted: %s", i+1, dump(inst))
		}
	}
	if code := adminREST(t, dep.manager, "GET", "/admin/topics", nil, nil); code != http.StatusConflict {
		t.Errorf("admin REST after the key was deleted answered %d, want 409", code)
	}
	assertNoCanary(t, c.s3.DataDir, canary)
}

// rotationAcrossNodesScenario: rotating the root key re-encrypts the
// deployment's objects under a new DEK ("Syncing KMS state" reaches 100%);
// the node running that task (the leader) is killed with SIGKILL halfway,
// and another node carries the task on to the end. Every record stays
// readable, and only the new DEK is left.
func rotationAcrossNodesScenario(t *testing.T, c *objectCluster, kp string) {
	admin := c.api(t)
	dep := admin.provisionDeployment(kp, "rotating")
	all := c.brokers(t, dep.guid)
	createTopic(t, dep.manager.at(all...), "events", 3)
	// Enough data (about 64 MB) that re-encrypting it takes several 8 MiB
	// object rewrites, each of which moves the task's progress.
	pad := strings.Repeat("x", 1000)
	values := make([]string, 64000)
	for i := range values {
		values[i] = numbered("before", i, 1)[0] + pad
	}
	produceValues(t, franz(t, dep.writer.at(all...), kgo.ProducerBatchCompression(kgo.NoCompression())), "events", values)
	db, err := sql.Open("pgx", c.databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	dekOf := func() (id, next string) {
		if err := db.QueryRow(`SELECT dek_id, next_dek_id FROM streams_deployments WHERE guid = $1`, dep.guid).Scan(&id, &next); err != nil {
			t.Fatal(err)
		}
		return id, next
	}
	oldDEK, _ := dekOf()

	leader := c.waitLeader(t, dep.guid)
	task := func() map[string]any {
		var out map[string]any
		if c.api(t).do("GET", client.Path("v5", "ibm", "deployments", dep.crn, "tasks"), nil, nil, &out) != nil {
			return nil
		}
		for _, x := range out["tasks"].([]any) {
			if tk := x.(map[string]any); tk["description"] == "Syncing KMS state" {
				return tk
			}
		}
		return nil
	}
	admin.must("POST", client.Path("api", "v2", "keys", dep.keyID, "actions", "rotate"), kpHeader(kp), map[string]any{})
	var at float64
	waitFor(t, 60*time.Second, "the re-encryption to be under way", func() bool {
		tk := task()
		if tk == nil {
			return false
		}
		if tk["status"] != "running" {
			t.Fatalf("the task ended before the kill: %s", dump(tk))
		}
		at = tk["progress_percent"].(float64)
		return at > 0
	})
	c.kill(leader)
	killed := time.Now()
	t.Logf("node-%d, running the task, killed at %v%%", leader+1, at)
	var seen []float64
	waitFor(t, 2*time.Minute, "the task to complete on another node", func() bool {
		tk := task()
		if tk == nil {
			return false
		}
		pct := tk["progress_percent"].(float64)
		if len(seen) == 0 || seen[len(seen)-1] != pct {
			seen = append(seen, pct)
		}
		if tk["status"] == "failed" {
			t.Fatalf("the task failed after the kill: %s", dump(tk))
		}
		return tk["status"] == "completed"
	})
	t.Logf("the task completed %v after the kill; progress after it: %v", time.Since(killed).Round(time.Millisecond), seen)
	if seen[len(seen)-1] != 100 {
		t.Fatalf("the task completed at %v%%", seen[len(seen)-1])
	}
	if now := c.waitLeader(t, dep.guid); now == leader {
		t.Fatalf("node-%d, killed, still leads", leader+1)
	}
	newDEK, next := dekOf()
	if newDEK == oldDEK || next != "" {
		t.Fatalf("after the rotation the deployment's DEK is %q (was %q), next %q: want a new one and none pending", newDEK, oldDEK, next)
	}
	// The old objects go a request timeout after their rows moved: then no
	// object in the bucket names the old DEK (a chunk names its key in plain).
	objects := filepath.Join(c.s3.DataDir, "keyline-e2e", "deployments", dep.guid)
	waitFor(t, 60*time.Second, "no object sealed under the old DEK to be left", func() bool {
		return scantest.FilesHolding(t, objects, append([]byte{byte(len(oldDEK))}, oldDEK...)) == 0
	})
	c.start(leader)
	cons := franz(t, dep.reader.at(c.brokers(t, dep.guid)...), kgo.ConsumeTopics("events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxBytes(64<<20))
	got := consumeRecords(t, cons, len(values))
	if err := sameSet(recordValues(got), values); err != nil {
		t.Fatalf("after the re-encryption: %v", err)
	}
}
