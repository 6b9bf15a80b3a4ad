package streams

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// plainDEK copies the deployment's plain DEK (what an attacker who kept it
// would hold) and returns the live one too, to check that it gets wiped.
func plainDEK(t testing.TB, d *deployment) (copied, live *seglog.DEK) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dek == nil {
		t.Fatal("the deployment holds no DEK")
	}
	return &seglog.DEK{ID: d.dek.ID, Key: bytes.Clone(d.dek.Key)}, d.dek
}

func (h *harness) waitAck(id string) testAck {
	h.t.Helper()
	var a testAck
	eventually(h.t, "the key event is acknowledged", func() bool {
		var ok bool
		a, ok = h.kms.ackFor(id)
		return ok
	})
	return a
}

func TestRotateReencryptsWhileProducing(t *testing.T) {
	h := newHarness(t)
	inst, key := h.provisionWithKey()
	h.createTopic(inst, "orders", 3)
	writer := h.client(inst, auth.RoleWriter)
	produceN(t, writer, "orders", "before", 3000)
	d := h.deployment(inst.GUID)
	old, _ := plainDEK(t, d)

	// A producer keeps writing through the whole rotation.
	var produced atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			r := &kgo.Record{Topic: "orders", Value: fmt.Appendf(nil, "during-%d", i)}
			if err := writer.ProduceSync(testCtx(t), r).FirstErr(); err != nil {
				t.Errorf("produce during rotation: %v", err)
				return
			}
			produced.Add(1)
		}
	}()
	ids := h.kms.act(t, key, ActionRotate)
	ack := h.waitAck(ids[0])
	eventually(t, "the re-encryption task completes", func() bool {
		tasks := h.tasks.all()
		if len(tasks) == 0 {
			return false
		}
		status, _ := tasks[0].status()
		return status == "completed"
	})
	close(stop)
	wg.Wait()

	t.Logf("%d records produced during the rotation", produced.Load())
	newVersion := h.kms.latestVersion(key)
	if ack.State != DEKEnabled || ack.Version != newVersion {
		t.Fatalf("ack %+v: want DEK_ENABLED with version %s", ack, newVersion)
	}
	if v, _ := h.kms.registration(key, inst.CRN); v != newVersion {
		t.Fatalf("registration version %s, want %s", v, newVersion)
	}
	tasks := h.tasks.all()
	if len(tasks) != 1 || tasks[0].Description != TaskSyncingKMSState || tasks[0].Deployment != inst.CRN {
		t.Fatalf("tasks %+v: want one %q task", tasks, TaskSyncingKMSState)
	}
	status, steps := tasks[0].status()
	t.Logf("task progress %v", steps)
	if status != "completed" || len(steps) < 2 {
		t.Fatalf("task %s with progress %v: want completed after moving progress", status, steps)
	}
	cur, _ := plainDEK(t, d)
	if cur.ID == old.ID || bytes.Equal(cur.Key, old.Key) {
		t.Fatal("the deployment still uses the old DEK")
	}
	d.mu.Lock()
	inUse, rec := d.st.KeyIDsInUse(), *d.rec
	d.mu.Unlock()
	if len(inUse) != 1 || inUse[0] != cur.ID || rec.NextDEKID != "" || rec.NextWrappedDEK != nil || rec.DEKID != cur.ID {
		t.Fatalf("keys in use %v, row %s/%s: want only the fresh DEK", inUse, rec.DEKID, rec.NextDEKID)
	}
	if evs := h.auditEvents(inst.CRN, actionStorageKeyUpdate); len(evs) != 1 || evs[0].Outcome != "success" {
		t.Fatalf("storage-key.update events %+v", evs)
	}

	want := 3000 + int(produced.Load())
	got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders")), want)
	if len(got) != want {
		t.Fatalf("consumed %d distinct records, produced %d", len(got), want)
	}
	for v, n := range got {
		if n != 1 {
			t.Fatalf("record %s consumed %d times", v, n)
		}
	}

	h.svc.Close()
	dir := h.svc.deploymentDir(inst.GUID)
	for _, k := range []*seglog.DEK{old, {ID: cur.ID, Key: old.Key}} {
		st, err := seglog.Open(dir, seglog.Options{StoreID: inst.GUID, Keys: []*seglog.DEK{k}})
		if err == nil {
			st.Close()
			t.Fatalf("the old DEK (as %s) opens the re-encrypted data", k.ID)
		}
	}
	h.start()
	if got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders")), want); len(got) != want {
		t.Fatalf("after restart consumed %d, want %d", len(got), want)
	}
}

func TestDisableLocksAndEnableUnlocks(t *testing.T) {
	h := newHarness(t)
	inst, key := h.provisionWithKey()
	h.createTopic(inst, "orders", 1)
	produceN(t, h.client(inst, auth.RoleWriter), "orders", "o", 100)
	_, live := plainDEK(t, h.deployment(inst.GUID))

	ack := h.waitAck(h.kms.act(t, key, ActionDisable)[0])
	if ack.State != DEKDisabled {
		t.Fatalf("ack %+v, want DEK_DISABLED", ack)
	}
	if !bytes.Equal(live.Key, make([]byte, 32)) {
		t.Fatal("the plain DEK was not wiped on disable")
	}
	wantReason := "the deployment is locked: its key " + key + " is disabled"
	info, err := h.svc.Deployment(context.Background(), inst.GUID)
	if err != nil || info.State != StateInactive || !strings.HasPrefix(info.Reason, wantReason) {
		t.Fatalf("deployment %+v %v: want inactive, %q", info, err, wantReason)
	}
	if st, reason := h.states.get(inst.GUID); st != StateInactive || reason != info.Reason {
		t.Fatalf("instance state %s %q", st, reason)
	}
	if err := h.client(inst, auth.RoleReader).Ping(testCtx(t)); err == nil || !strings.Contains(err.Error(), wantReason) {
		t.Fatalf("login while disabled: %v, want %q", err, wantReason)
	}

	ack = h.waitAck(h.kms.act(t, key, ActionEnable)[0])
	if ack.State != DEKEnabled {
		t.Fatalf("ack %+v, want DEK_ENABLED", ack)
	}
	if got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders")), 100); len(got) != 100 {
		t.Fatalf("consumed %d after enable, want 100", len(got))
	}
	if st, _ := h.states.get(inst.GUID); st != StateActive {
		t.Fatalf("instance state %s after enable", st)
	}
	evs := h.auditEvents(inst.CRN, actionStorageKeyRead)
	if len(evs) != 2 || evs[0].Outcome != "success" || evs[1].Outcome != "failure" || evs[1].Reason.ReasonForFailure == "" {
		t.Fatalf("storage-key.read events %+v: want a failure then a success", evs)
	}
}

// A deployment stuck in an operation (its op lock held, as a restore
// that never returned held it) leaves its own key events pending while rotation and disable of other deployments take effect.
func TestStuckDeploymentDoesNotHoldUpOthersKeyEvents(t *testing.T) {
	h := newHarness(t)
	stuck, stuckKey := h.provisionWithKey()
	other, otherKey := h.provisionWithKey()
	d := h.deployment(stuck.GUID)
	d.op.Lock()
	held := true
	defer func() {
		if held {
			d.op.Unlock()
		}
	}()
	stuckDisable := h.kms.act(t, stuckKey, ActionDisable)[0]

	before, _, _ := h.deployment(other.GUID).snapshot()
	if ack := h.waitAck(h.kms.act(t, otherKey, ActionRotate)[0]); ack.Version == before.KeyVersion {
		t.Fatalf("rotation ack %+v: still version %s", ack, before.KeyVersion)
	}
	if ack := h.waitAck(h.kms.act(t, otherKey, ActionDisable)[0]); ack.State != DEKDisabled {
		t.Fatalf("disable ack %+v, want DEK_DISABLED", ack)
	}
	if info, _ := h.svc.Deployment(context.Background(), other.GUID); info.State != StateInactive {
		t.Fatalf("the other deployment is %s after its key was disabled", info.State)
	}
	if _, ok := h.kms.ackFor(stuckDisable); ok {
		t.Fatal("the stuck deployment's disable was acknowledged while it was stuck")
	}

	d.op.Unlock()
	held = false
	if ack := h.waitAck(stuckDisable); ack.State != DEKDisabled {
		t.Fatalf("the stuck deployment's disable, once free: ack %+v", ack)
	}
	if info, _ := h.svc.Deployment(context.Background(), stuck.GUID); info.State != StateInactive {
		t.Fatalf("the stuck deployment is %s after its key was disabled", info.State)
	}
}

// disconnects counts the client's closed broker connections.
type disconnects struct{ n atomic.Int64 }

func (d *disconnects) OnBrokerDisconnect(kgo.BrokerMetadata, net.Conn) { d.n.Add(1) }

func TestForceDeleteLocksDeployment(t *testing.T) {
	h := newHarness(t)
	inst, key := h.provisionWithKey()
	h.createTopic(inst, "orders", 1)
	produceN(t, h.client(inst, auth.RoleWriter), "orders", "o", 100)
	_, live := plainDEK(t, h.deployment(inst.GUID))

	var dis disconnects
	consumer := h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders"), kgo.WithHooks(&dis))
	consumeAll(t, consumer, 100)
	ctx, cancel := context.WithCancel(context.Background())
	polling := make(chan struct{})
	go func() {
		defer close(polling)
		for ctx.Err() == nil {
			consumer.PollFetches(ctx)
		}
	}()
	ack := h.waitAck(h.kms.act(t, key, ActionDelete)[0])
	if ack.State != DEKDestroyed {
		t.Fatalf("ack %+v, want DEK_DESTROYED", ack)
	}
	eventually(t, "the consumer's connections are closed", func() bool { return dis.n.Load() > 0 })
	cancel()
	<-polling
	if !bytes.Equal(live.Key, make([]byte, 32)) {
		t.Fatal("the plain DEK is still in memory after the key was deleted")
	}
	wantReason := "the deployment is locked and disabled: its key " + key + " was deleted"
	if err := h.client(inst, auth.RoleReader).Ping(testCtx(t)); err == nil || !strings.Contains(err.Error(), wantReason) {
		t.Fatalf("login after delete: %v, want %q", err, wantReason)
	}

	// Metadata and security settings stay readable, over HTTP too.
	srv := httptest.NewServer(h.svc.Handler())
	defer srv.Close()
	token := h.iam.grant(testAccount, inst.GUID, auth.RoleReader)
	var info DeploymentInfo
	if code := getJSON(t, srv.URL+"/messagehub/"+inst.GUID, token, &info); code != 200 {
		t.Fatalf("GET deployment: %d", code)
	}
	if info.DiskEncryptionKeyCRN != key || info.Plan != inst.Plan || info.Region != inst.Region || info.State != StateInactive || !strings.HasPrefix(info.Reason, wantReason) {
		t.Fatalf("deployment metadata %+v", info)
	}
	var adminErr struct{ Message string }
	if code := getJSON(t, srv.URL+"/messagehub/"+inst.GUID+"/admin/topics", token, &adminErr); code != 409 || !strings.HasPrefix(adminErr.Message, wantReason) {
		t.Fatalf("admin API while shredded: %d %q", code, adminErr.Message)
	}
	if evs := h.auditEvents(inst.CRN, actionStorageKeyRead); len(evs) != 1 || evs[0].Outcome != "failure" {
		t.Fatalf("storage-key.read events %+v", evs)
	}

	t.Run("restore within 30 days unlocks", func(t *testing.T) {
		h.waitAck(h.kms.act(t, key, ActionRestore)[0])
		if got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders")), 100); len(got) != 100 {
			t.Fatalf("consumed %d after restore, want 100", len(got))
		}
		var topics []map[string]any
		if code := getJSON(t, srv.URL+"/messagehub/"+inst.GUID+"/admin/topics", token, &topics); code != 200 || len(topics) != 1 {
			t.Fatalf("admin topics after restore: %d %v", code, topics)
		}
	})
}

func getJSON(t testing.TB, url, token string, v any) int {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("decode %s: %v", url, err)
	}
	return resp.StatusCode
}

func TestRestartWithDeletedKeyStaysLocked(t *testing.T) {
	h := newHarness(t)
	shredded, key := h.provisionWithKey()
	h.createTopic(shredded, "orders", 1)
	produceN(t, h.client(shredded, auth.RoleWriter), "orders", "o", 10)
	healthy := newInstance()
	if _, err := h.svc.Provision(context.Background(), healthy, nil); err != nil {
		t.Fatal(err)
	}
	h.createTopic(healthy, "logs", 1)
	produceN(t, h.client(healthy, auth.RoleWriter), "logs", "l", 10)

	// The key is deleted while Keyline is down: the event waits for it.
	h.svc.Close()
	ids := h.kms.act(t, key, ActionDelete)
	h.start()
	if ack := h.waitAck(ids[0]); ack.State != DEKDestroyed {
		t.Fatalf("ack %+v", ack)
	}
	for _, round := range []struct {
		name, want string
	}{
		{"deleted", "its key " + key + " was deleted"},
		{"purged", "its key " + key + " was deleted and purged, so its data can never be read again"},
	} {
		t.Run(round.name, func(t *testing.T) {
			if round.name == "purged" {
				h.kms.act(t, key, "purge")
			}
			h.restart()
			info, err := h.svc.Deployment(context.Background(), shredded.GUID)
			if err != nil || info.State != StateInactive || !strings.Contains(info.Reason, round.want) {
				t.Fatalf("after restart: %+v %v, want locked because %q", info, err, round.want)
			}
			if st, reason := h.states.get(shredded.GUID); st != StateInactive || reason != info.Reason {
				t.Fatalf("instance state %s %q", st, reason)
			}
			if err := h.client(shredded, auth.RoleReader).Ping(testCtx(t)); err == nil || !strings.Contains(err.Error(), round.want) {
				t.Fatalf("login: %v", err)
			}
			if got := consumeAll(t, h.client(healthy, auth.RoleReader, kgo.ConsumeTopics("logs")), 10); len(got) != 10 {
				t.Fatalf("the healthy deployment serves %d records, want 10", len(got))
			}
		})
	}
}

func TestSuspendResumeAndReclaim(t *testing.T) {
	h := newHarness(t)
	inst, key := h.provisionWithKey()
	h.createTopic(inst, "orders", 1)
	produceN(t, h.client(inst, auth.RoleWriter), "orders", "o", 10)
	ctx := context.Background()
	if err := h.svc.Suspend(ctx, inst.GUID); err != nil {
		t.Fatal(err)
	}
	if err := h.client(inst, auth.RoleReader).Ping(testCtx(t)); err == nil {
		t.Fatal("a suspended deployment accepts Kafka connections")
	}
	if _, ok := h.kms.registration(key, inst.CRN); !ok {
		t.Fatal("suspension removed the key registration")
	}
	h.restart()
	if info, _ := h.svc.Deployment(ctx, inst.GUID); info.State != StateSuspended {
		t.Fatalf("state after restart %s, want suspended", info.State)
	}
	if err := h.svc.Resume(ctx, inst.GUID); err != nil {
		t.Fatal(err)
	}
	if got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders")), 10); len(got) != 10 {
		t.Fatalf("consumed %d after resume", len(got))
	}
	if err := h.svc.Reclaim(ctx, inst.GUID); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.kms.registration(key, inst.CRN); ok {
		t.Fatal("reclamation left the key registration")
	}
	if err := walkFiles(h.svc.deploymentDir(inst.GUID), func([]byte) {}); err == nil {
		t.Fatal("reclamation left the data directory")
	}
	if _, err := h.svc.Deployment(ctx, inst.GUID); errs.KindOf(err) != errs.NotExist {
		t.Fatalf("reclaimed deployment: %v", err)
	}
}

func TestInterruptedReencryptionResumesAfterRestart(t *testing.T) {
	h := newHarness(t)
	inst, _ := h.provisionWithKey()
	h.createTopic(inst, "orders", 2)
	produceN(t, h.client(inst, auth.RoleWriter), "orders", "o", 2000)
	d := h.deployment(inst.GUID)
	cur, _ := plainDEK(t, d)
	h.svc.Close()

	// Leave the state a crash in the middle of a rotation leaves: the next
	// DEK stored wrapped beside the current one, and the log switched to it
	// with old blocks still to rewrite.
	next := h.storeNextDEK(d)
	st, err := seglog.Open(d.dir, seglog.Options{StoreID: inst.GUID, Keys: []*seglog.DEK{cur}, Sync: true})
	if err != nil {
		t.Fatal(err)
	}
	interrupted, cancel := context.WithCancel(context.Background())
	cancel()
	if err := st.ReencryptTo(interrupted, &seglog.DEK{ID: next.ID, Key: bytes.Clone(next.Key)}, nil); err == nil {
		t.Fatal("a canceled re-encryption finished")
	}
	if len(st.KeyIDsInUse()) < 2 {
		t.Fatalf("keys in use %v: the interrupted state needs blocks under both keys", st.KeyIDsInUse())
	}
	st.Close()

	h.start()
	h.waitResumed(inst.GUID, next.ID, func(d *deployment) []string { return d.st.KeyIDsInUse() })
	if got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders")), 2000); len(got) != 2000 {
		t.Fatalf("consumed %d, want 2000", len(got))
	}
}

func TestRevokedAuthorizationLocksAtStart(t *testing.T) {
	h := newHarness(t)
	inst, _ := h.provisionWithKey()
	h.kms.revoke(testAccount, kpInstance)
	h.restart()
	info, err := h.svc.Deployment(context.Background(), inst.GUID)
	want := "it is no longer authorized to use its key"
	if err != nil || info.State != StateInactive || !strings.Contains(info.Reason, want) {
		t.Fatalf("deployment %+v %v: want locked because %q", info, err, want)
	}
	// No key event says the authorization is back: the service retries.
	h.kms.authorize(testAccount, kpInstance, true)
	eventually(t, "the deployment unlocks once authorized again", func() bool {
		info, _ := h.svc.Deployment(context.Background(), inst.GUID)
		return info.State == StateActive
	})
	if info, _ := h.svc.Deployment(context.Background(), inst.GUID); info.State != StateActive {
		t.Fatalf("state %s %q after the authorization is back", info.State, info.Reason)
	}
}

func TestSharedKeyEventReachesEveryDeployment(t *testing.T) {
	h := newHarness(t)
	first, key := h.provisionWithKey()
	second := newInstance()
	if _, err := h.svc.Provision(context.Background(), second, map[string]any{ParamDiskKey: key}); err != nil {
		t.Fatal(err)
	}
	ack := h.waitAck(h.kms.act(t, key, ActionDelete)[0])
	if ack.State != DEKDestroyed || len(ack.Event.ResourceCRNs) != 2 {
		t.Fatalf("ack %+v: want one DEK_DESTROYED for both deployments", ack)
	}
	for _, inst := range []Instance{first, second} {
		if info, _ := h.svc.Deployment(context.Background(), inst.GUID); info.State != StateInactive {
			t.Fatalf("deployment %s is %s after its shared key was deleted", inst.GUID, info.State)
		}
	}
}
