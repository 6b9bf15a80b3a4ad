package e2e

import (
	"context"
	"database/sql"
	"encoding/base64"
	bin "encoding/binary"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	_ "modernc.org/sqlite"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// TestKeyEventsThroughTheKMS changes the disk keys of running deployments
// through the Key Protect API and checks what each change does to the data
// and to the clients connected to it.
func TestKeyEventsThroughTheKMS(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	kp := admin.keyProtect("events-kp")

	t.Run("rotation re-encrypts under live traffic", func(t *testing.T) { rotationScenario(t, e, admin, kp) })
	t.Run("disable locks and enable unlocks", func(t *testing.T) { disableScenario(t, admin, kp) })
	t.Run("force delete cuts readers off and restore unlocks", func(t *testing.T) { forceDeleteScenario(t, e, kp) })
}

func rotationScenario(t *testing.T, e *env, admin *api, kp string) {
	dep := admin.provisionDeployment(kp, "rotating")
	createTopic(t, dep.manager, "events", 3)
	prod := franz(t, dep.writer, kgo.DefaultProduceTopic("events"), kgo.ProducerBatchCompression(kgo.NoCompression()))
	// Enough data (about 24 MB) that re-encrypting it reports progress on
	// the way.
	big := make([]string, 24000)
	pad := strings.Repeat("x", 1000)
	for i := range big {
		big[i] = numbered("before", i, 1)[0] + pad
	}
	produceValues(t, prod, "events", big)
	oldID, oldWrapped := dekRow(t, e.dir, dep.guid)
	oldDEK := unwrapDEK(t, admin, dep, oldID, oldWrapped)

	// A producer and a consumer run through the whole rotation.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	produced := slices.Clone(big)
	var wg sync.WaitGroup
	stopProducing, producerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(producerDone)
		for i := 0; ; i++ {
			select {
			case <-stopProducing:
				return
			default:
			}
			v := numbered("during", i, 1)[0]
			if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(v)}).FirstErr(); err != nil {
				t.Errorf("produce during the rotation: %v", err)
				return
			}
			mu.Lock()
			produced = append(produced, v)
			mu.Unlock()
		}
	}()
	cons := franz(t, dep.reader, kgo.ConsumeTopics("events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	var consumed []*kgo.Record
	var consMu sync.Mutex
	wg.Go(func() {
		for ctx.Err() == nil {
			fs := cons.PollFetches(ctx)
			fs.EachError(func(_ string, _ int32, err error) {
				if ctx.Err() == nil {
					t.Errorf("fetch during the rotation: %v", err)
				}
			})
			consMu.Lock()
			consumed = append(consumed, fs.Records()...)
			consMu.Unlock()
		}
	})

	// Watch the task while the key rotates.
	var seen []float64
	var completed atomic.Bool
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for ctx.Err() == nil && !completed.Load() {
			var out map[string]any
			if admin.do("GET", client.Path("v5", "ibm", "deployments", dep.crn, "tasks"), nil, nil, &out) == nil {
				for _, x := range out["tasks"].([]any) {
					task := x.(map[string]any)
					if task["description"] != "Syncing KMS state" {
						continue
					}
					pct := task["progress_percent"].(float64)
					if len(seen) == 0 || seen[len(seen)-1] != pct {
						seen = append(seen, pct)
					}
					if task["status"] == "completed" {
						completed.Store(true)
					}
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	admin.must("POST", client.Path("api", "v2", "keys", dep.keyID, "actions", "rotate"), kpHeader(kp), map[string]any{})
	waitFor(t, 60*time.Second, "the Syncing KMS state task to complete", completed.Load)
	<-watchDone
	if seen[len(seen)-1] != 100 || len(seen) < 2 {
		t.Fatalf("task progress went %v: want it to move and reach 100", seen)
	}
	close(stopProducing)
	<-producerDone
	mu.Lock()
	want := slices.Clone(produced)
	mu.Unlock()
	waitFor(t, 30*time.Second, "the consumer to read everything produced", func() bool {
		consMu.Lock()
		defer consMu.Unlock()
		return len(consumed) >= len(want)
	})
	cancel()
	wg.Wait()
	if err := sameSet(recordValues(consumed), want); err != nil {
		t.Fatalf("what was consumed across the rotation: %v", err)
	}
	valuesOf(t, consumed) // offsets only grow within each partition
	t.Logf("task progress %v; %d records produced during the rotation", seen, len(want)-len(big))

	// Only the new DEK has sealed anything now: every block on disk names
	// it, the log opens with it and not with the old one, and the old
	// wrapped DEK is gone from the database.
	newID, newWrapped := dekRow(t, e.dir, dep.guid)
	if newID == oldID {
		t.Fatal("the deployment still uses the old DEK")
	}
	newDEK := unwrapDEK(t, admin, dep, newID, newWrapped)
	data := filepath.Join(e.dir, "deployments", dep.guid)
	if ids := blockKeyIDs(t, data); len(ids) != 1 || !ids[newID] {
		t.Fatalf("blocks on disk are sealed by %v, want only the new DEK %s", ids, newID)
	}
	tmp := t.TempDir()
	copyDir(t, data, filepath.Join(tmp, "old"))
	if st, err := seglog.Open(filepath.Join(tmp, "old"), seglog.Options{StoreID: dep.guid, Keys: []*seglog.DEK{oldDEK}}); err == nil {
		st.Close()
		t.Fatal("the log still opens with the old DEK")
	}
	copyDir(t, data, filepath.Join(tmp, "new"))
	st, err := seglog.Open(filepath.Join(tmp, "new"), seglog.Options{StoreID: dep.guid, Keys: []*seglog.DEK{newDEK}})
	if err != nil {
		t.Fatalf("a copy of the log does not open with the new DEK: %v", err)
	}
	st.Close()
}

func disableScenario(t *testing.T, admin *api, kp string) {
	dep := admin.provisionDeployment(kp, "disabling")
	createTopic(t, dep.manager, "audit-trail", 2)
	values := numbered("entry", 0, 100)
	produceValues(t, franz(t, dep.writer), "audit-trail", values)
	r := startReader(t, dep.reader, "audit-trail")
	r.waitConnected(t)

	admin.must("POST", client.Path("api", "v2", "keys", dep.keyID, "actions", "disable"), kpHeader(kp), map[string]any{})
	r.waitCutOff(t)
	err := franz(t, dep.reader, kgo.RetryTimeout(time.Second)).Ping(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "disabled") {
		t.Fatalf("a new login while the key is disabled: %v, want a refusal that says the key is disabled", err)
	}
	if info := admin.deploymentInfo(dep.guid); info["state"] != "inactive" || !strings.Contains(info["state_reason"].(string), "disabled") {
		t.Fatalf("deployment while its key is disabled: %s", dump(info))
	}

	admin.must("POST", client.Path("api", "v2", "keys", dep.keyID, "actions", "enable"), kpHeader(kp), map[string]any{})
	waitFor(t, 30*time.Second, "the deployment to unlock", func() bool { return admin.deploymentInfo(dep.guid)["state"] == "active" })
	cons := franz(t, dep.reader, kgo.ConsumeTopics("audit-trail"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err := sameSet(recordValues(consumeRecords(t, cons, len(values))), values); err != nil {
		t.Fatalf("after enable: %v", err)
	}
}

func forceDeleteScenario(t *testing.T, e *env, kp string) {
	admin := e.as(e.admin)
	dep := admin.provisionDeployment(kp, "shredding")
	createTopic(t, dep.manager, "patients", 2)
	values := numbered("record", 0, 200)
	produceValues(t, franz(t, dep.writer), "patients", values)
	r := startReader(t, dep.reader, "patients")
	r.waitConnected(t)

	admin.must("DELETE", client.Path("api", "v2", "keys", dep.keyID)+"?force=true", kpHeader(kp), nil)
	deleted := time.Now()
	r.waitCutOff(t)
	if took := r.cutAt().Sub(deleted); took > time.Second {
		t.Fatalf("the reader was cut off %v after the force delete, want within a second", took)
	}
	// Metadata and security settings stay readable; the data does not.
	info := admin.deploymentInfo(dep.guid)
	if info["state"] != "inactive" || !strings.Contains(info["state_reason"].(string), "deleted") || info["disk_encryption_key_crn"] != dep.keyCRN {
		t.Fatalf("deployment after its key was deleted: %s", dump(info))
	}
	if inst := admin.must("GET", client.Path("v2", "resource_instances", dep.guid), nil, nil); inst["crn"] != dep.crn {
		t.Fatalf("resource instance after the key was deleted: %s", dump(inst))
	}
	err := franz(t, dep.reader, kgo.RetryTimeout(time.Second)).Ping(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("a login after the key was deleted: %v, want a refusal that says the key was deleted", err)
	}
	var adminErr map[string]any
	if code := adminREST(t, dep.manager, "GET", "/admin/topics", nil, &adminErr); code != 409 {
		t.Fatalf("admin REST after the key was deleted: %d %v, want 409", code, adminErr)
	}

	// Restore (allowed 30 seconds to 30 days after the deletion) unlocks.
	e.clock.Advance(time.Hour)
	admin = e.as(client.New(e.url, adminKey))
	admin.must("POST", client.Path("api", "v2", "keys", dep.keyID, "restore"), kpHeader(kp), nil)
	waitFor(t, 30*time.Second, "the deployment to unlock after the restore", func() bool { return admin.deploymentInfo(dep.guid)["state"] == "active" })
	cons := franz(t, dep.reader, kgo.ConsumeTopics("patients"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err := sameSet(recordValues(consumeRecords(t, cons, len(values))), values); err != nil {
		t.Fatalf("after the restore: %v", err)
	}
}

// TestRestartWithDeletedKeyStaysLocked deletes one deployment's key, restarts
// Keyline, and finds that deployment locked with the reason while another
// one serves all its data.
func TestRestartWithDeletedKeyStaysLocked(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	var gone, kept streamsDeployment
	// The first Keyline lives in a subtest, whose end stops it.
	t.Run("before the restart", func(t *testing.T) {
		e := startIn(t, dir, clk)
		admin := e.as(e.admin)
		kp := admin.keyProtect("restart-kp")
		gone = admin.provisionDeployment(kp, "gone")
		kept = admin.provisionDeployment(kp, "kept")
		for _, d := range []streamsDeployment{gone, kept} {
			createTopic(t, d.manager, "t", 1)
			produceValues(t, franz(t, d.writer), "t", numbered("v", 0, 50))
		}
		admin.must("DELETE", client.Path("api", "v2", "keys", gone.keyID)+"?force=true", kpHeader(kp), nil)
		waitFor(t, 30*time.Second, "the deployment to lock", func() bool { return admin.deploymentInfo(gone.guid)["state"] == "inactive" })
	})
	if t.Failed() {
		return
	}

	e := startIn(t, dir, clk)
	admin := e.as(e.admin)
	info := admin.deploymentInfo(gone.guid)
	if info["state"] != "inactive" || !strings.Contains(info["state_reason"].(string), "deleted") {
		t.Fatalf("after the restart the deployment whose key is deleted is: %s", dump(info))
	}
	if inst := admin.must("GET", client.Path("v2", "resource_instances", gone.guid), nil, nil); inst["state"] != "inactive" {
		t.Fatalf("the resource instance of the locked deployment is %v", inst["state"])
	}
	if err := franz(t, withBrokers(gone.reader, info), kgo.RetryTimeout(time.Second)).Ping(testCtx(t)); err == nil || !strings.Contains(err.Error(), "deleted") {
		t.Fatalf("a login to the locked deployment: %v", err)
	}
	keptInfo := admin.deploymentInfo(kept.guid)
	if keptInfo["state"] != "active" {
		t.Fatalf("the other deployment is %v after the restart: %v", keptInfo["state"], keptInfo["state_reason"])
	}
	cons := franz(t, withBrokers(kept.reader, keptInfo), kgo.ConsumeTopics("t"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err := sameSet(recordValues(consumeRecords(t, cons, 50)), numbered("v", 0, 50)); err != nil {
		t.Fatalf("the other deployment after the restart: %v", err)
	}
}

// withBrokers is c pointing at the brokers a deployment's info names (a
// restart may move the listener).
func withBrokers(c kafkaCreds, info map[string]any) kafkaCreds {
	c.Brokers = nil
	for _, b := range info["kafka_brokers_sasl"].([]any) {
		c.Brokers = append(c.Brokers, b.(string))
	}
	return c
}

// reader is a consumer polling in the background that notes when its
// connections to the broker close.
type reader struct {
	mu        sync.Mutex
	connects  int
	cutOff    time.Time
	armed     bool
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

func startReader(t *testing.T, c kafkaCreds, topic string) *reader {
	r := &reader{done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	cl := franz(t, c, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.WithHooks(r),
		kgo.FetchMaxWait(100*time.Millisecond))
	go func() {
		defer close(r.done)
		for ctx.Err() == nil {
			cl.PollFetches(ctx)
		}
	}()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

func (r *reader) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		r.mu.Lock()
		r.connects++
		r.mu.Unlock()
	}
}

func (r *reader) OnBrokerDisconnect(kgo.BrokerMetadata, net.Conn) {
	r.mu.Lock()
	if r.armed && r.cutOff.IsZero() {
		r.cutOff = time.Now()
	}
	r.mu.Unlock()
}

// waitConnected waits until the reader is connected and reading, then arms
// the cut-off watch.
func (r *reader) waitConnected(t *testing.T) {
	t.Helper()
	waitFor(t, 30*time.Second, "the reader to connect", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.connects >= 1
	})
	r.mu.Lock()
	r.armed = true
	r.mu.Unlock()
}

func (r *reader) waitCutOff(t *testing.T) {
	t.Helper()
	waitFor(t, 30*time.Second, "the reader's connection to close", func() bool { return !r.cutAt().IsZero() })
}

func (r *reader) cutAt() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cutOff
}

// dekRow reads the deployment's DEK id and wrapped DEK from the database.
func dekRow(t *testing.T, dir, guid string) (string, []byte) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "keyline.db")+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var id, next string
	var wrapped []byte
	if err := db.QueryRow(`SELECT dek_id, wrapped_dek, next_dek_id FROM streams_deployments WHERE guid=?`, guid).Scan(&id, &wrapped, &next); err != nil {
		t.Fatal(err)
	}
	if next != "" {
		t.Fatalf("a re-encryption is still pending (next DEK %s)", next)
	}
	return id, wrapped
}

// unwrapDEK unwraps a deployment's DEK through the Key Protect API, as a
// user with access to the root key could.
func unwrapDEK(t *testing.T, admin *api, dep streamsDeployment, id string, wrapped []byte) *seglog.DEK {
	t.Helper()
	out := admin.must("POST", client.Path("api", "v2", "keys", dep.keyID, "actions", "unwrap"), kpHeader(dep.kpGUID),
		map[string]any{"ciphertext": base64.StdEncoding.EncodeToString(wrapped), "aad": []string{dep.crn, id}})
	key, err := base64.StdEncoding.DecodeString(out["plaintext"].(string))
	if err != nil || len(key) != 32 {
		t.Fatalf("unwrapped DEK: %v (%d bytes)", err, len(key))
	}
	return &seglog.DEK{ID: id, Key: key}
}

// blockKeyIDs walks every block of every file of a deployment's log and
// returns the IDs of the DEKs that sealed them. The block header is plain:
// "KL", version, flags, body length (LE uint32), key ID length, key ID, CRC.
func blockKeyIDs(t *testing.T, dir string) map[string]bool {
	t.Helper()
	ids := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "LOCK" {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for pos := 0; pos < len(b); {
			if len(b)-pos < 13 || b[pos] != 'K' || b[pos+1] != 'L' {
				t.Fatalf("%s: no block at %d", path, pos)
			}
			body := int(bin.LittleEndian.Uint32(b[pos+4:]))
			k := int(b[pos+8])
			ids[string(b[pos+9:pos+9+k])] = true
			pos += 9 + k + 4 + body
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
}
