package streams

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

const (
	testAccount  = "acct0000000000000000000000000001"
	otherAccount = "acct0000000000000000000000000002"
	kpInstance   = "11111111-2222-3333-4444-555555555555"
)

// harness is a Service over real storage, a real audit log and the
// in-process KMS, IAM, tasks and states of fakes_test.go.
type harness struct {
	t      testing.TB
	dir    string
	db     *store.DB
	audit  *audit.Log
	master *seal.AEAD
	kms    *testKMS
	iam    *testIAM
	tasks  *testTasks
	states *testStates
	svc    *Service
	// configure, when set, changes the Config of the next start.
	configure func(*Config)
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	dir := t.TempDir()
	ctx := context.Background()
	db := storetest.Open(t)
	al, err := audit.New(ctx, db, clock.Real{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(al.Close)
	master := mustSeal(t)
	k := newTestKMS()
	h := &harness{t: t, dir: dir, db: db, audit: al, master: master, kms: k, iam: newTestIAM(k), tasks: &testTasks{}, states: &testStates{}}
	h.start()
	return h
}

// start runs a new Service over the harness's storage, as after a restart.
func (h *harness) start() {
	h.t.Helper()
	cfg := Config{DB: h.db, Audit: h.audit, Keys: h.kms, Identity: h.iam, Tasks: h.tasks,
		States: h.states, MasterKey: h.master, DataDir: filepath.Join(h.dir, "data"), AdminURL: "http://127.0.0.1:9",
		SegmentBytes: 16 << 10, PollInterval: 20 * time.Millisecond, EventWait: 500 * time.Millisecond}
	if h.configure != nil {
		h.configure(&cfg)
	}
	svc, err := New(context.Background(), cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		h.t.Fatal(err)
	}
	h.svc = svc
	h.t.Cleanup(func() { svc.Close() })
}

func (h *harness) restart() {
	h.t.Helper()
	h.svc.Close()
	h.start()
}

func newInstance() Instance {
	guid := uuid.NewString()
	return Instance{GUID: guid, CRN: crn.New(ServiceName, "us-south", testAccount, guid).String(), AccountID: testAccount,
		Name: "orders-" + guid[:8], Plan: "enterprise", Region: "us-south"}
}

// provisionWithKey provisions a deployment protected by a new authorized key.
func (h *harness) provisionWithKey() (Instance, string) {
	h.t.Helper()
	key := h.kms.addKey(h.t, testAccount, "us-south", kpInstance, false)
	h.kms.authorize(testAccount, kpInstance, true)
	inst := newInstance()
	if _, err := h.svc.Provision(context.Background(), inst, map[string]any{ParamDiskKey: key}); err != nil {
		h.t.Fatal(err)
	}
	return inst, key
}

// client connects to a deployment with credentials of role.
func (h *harness) client(inst Instance, role string, opts ...kgo.Opt) *kgo.Client {
	h.t.Helper()
	creds, err := h.svc.Credentials(inst.GUID, h.iam.credentials(inst.AccountID, inst.GUID, "test-"+auth.RoleName(role), role))
	if err != nil {
		h.t.Fatal(err)
	}
	return h.clientWith(creds["kafka_brokers_sasl"].([]string), creds["user"].(string), creds["api_key"].(string), opts...)
}

func (h *harness) clientWith(brokers []string, user, pass string, opts ...kgo.Opt) *kgo.Client {
	h.t.Helper()
	return newClient(h.t, brokers, user, pass, opts...)
}

// newClient is a Kafka client logging in with SASL PLAIN.
func newClient(t testing.TB, brokers []string, user, pass string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	all := append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()),
		kgo.RetryTimeout(5 * time.Second)}, opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func (h *harness) createTopic(inst Instance, topic string, partitions int32) {
	h.t.Helper()
	createTopic(h.t, h.client(inst, auth.RoleManager), topic, partitions)
}

// createTopic creates a topic through a manager's client.
func createTopic(t testing.TB, manager *kgo.Client, topic string, partitions int32) {
	t.Helper()
	resp, err := kadm.NewClient(manager).CreateTopics(testCtx(t), partitions, 1, nil, topic)
	if err != nil {
		t.Fatal(err)
	}
	if err := resp.Error(); err != nil {
		t.Fatal(err)
	}
}

func (h *harness) deployment(guid string) *deployment {
	d, err := h.svc.get("test", guid)
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

// auditActions lists the actions recorded on a target, newest first.
func (h *harness) auditEvents(target, action string) []audit.Event {
	h.t.Helper()
	page, err := h.audit.Query(context.Background(), audit.Filter{AccountID: testAccount, Target: target, Action: action, Limit: 500})
	if err != nil {
		h.t.Fatal(err)
	}
	return page.Events
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually waits for cond, which the service reaches asynchronously; the
// deadline only bounds a broken test, it asserts nothing about speed.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	eventuallyWithin(t, 20*time.Second, what, cond)
}

// eventuallyWithin is eventually with its own deadline.
func eventuallyWithin(t testing.TB, wait time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// produceN produces n records with values "<prefix>-<i>" and waits for them.
func produceN(t testing.TB, cl *kgo.Client, topic, prefix string, n int) {
	t.Helper()
	ctx := testCtx(t)
	for i := range n {
		cl.Produce(ctx, &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "%s-%d", prefix, i)}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// consumeAll reads n records of topic from the start.
func consumeAll(t testing.TB, cl *kgo.Client, n int) map[string]int {
	t.Helper()
	ctx := testCtx(t)
	got := map[string]int{}
	total := 0
	for total < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records", total, n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Logf("fetch %s/%d: %v", topic, p, err) })
		for _, r := range fs.Records() {
			got[string(r.Value)]++
			total++
		}
	}
	return got
}

// mustSeal is an AEAD under a fresh random master key.
func mustSeal(t testing.TB) *seal.AEAD {
	t.Helper()
	a, err := seal.New(seal.RandomKey())
	if err != nil {
		t.Fatal(err)
	}
	return a
}
