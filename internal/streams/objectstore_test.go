package streams

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/scantest"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/streams/objlog"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// objectStoreHarness is a harness whose deployments keep their data in a
// versitygw bucket, with their index in the harness's database.
func objectStoreHarness(t *testing.T) (*harness, *volumetest.S3Server) {
	t.Helper()
	b, srv := testBucket(t)
	h := newHarness(t)
	h.configure = func(c *Config) { c.ObjectStore = b }
	h.restart()
	return h, srv
}

// testBucket is a bucket on a versitygw server of the test's.
func testBucket(t *testing.T) (*objlog.Bucket, *volumetest.S3Server) {
	t.Helper()
	srv := volumetest.StartS3(t)
	b, err := objlog.NewBucket(objlog.BucketConfig{Endpoint: srv.Endpoint, Bucket: "keyline-streams", AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return b, srv
}

// reencryptionWait bounds a re-encryption on object storage: it ends a
// request timeout (10 s) after its last rewrite, when the old objects go.
const reencryptionWait = time.Minute

// countFiles counts the regular files under dir (0 when it is missing).
func countFiles(t *testing.T, dir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			n++
		}
		return err
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return n
}

func TestDeploymentOnObjectStorageServesRestartsRotatesAndIsErased(t *testing.T) {
	h, srv := objectStoreHarness(t)
	inst, key := h.provisionWithKey()
	h.createTopic(inst, "orders", 3)
	produceN(t, h.client(inst, auth.RoleWriter), "orders", "rec", 300)
	read := func() {
		t.Helper()
		got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), 300)
		if len(got) != 300 {
			t.Fatalf("read %d distinct records, want 300", len(got))
		}
	}
	read()
	objects := filepath.Join(srv.DataDir, "keyline-streams", objlog.ObjectPrefix(inst.GUID))
	if countFiles(t, objects) == 0 {
		t.Fatal("no object in the bucket")
	}
	if n := countFiles(t, h.deployment(inst.GUID).dir); n != 0 {
		t.Fatalf("%d files on the local disk of a deployment on object storage", n)
	}

	h.restart()
	read()

	// A rotation rewraps the DEK and re-encrypts every object and row
	// under a fresh DEK while a producer goes on, then deletes the old DEK.
	d := h.deployment(inst.GUID)
	old, _ := plainDEK(t, d)
	writer := h.client(inst, auth.RoleWriter)
	var produced atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if err := writer.ProduceSync(testCtx(t), &kgo.Record{Topic: "orders", Value: fmt.Appendf(nil, "during-%d", i)}).FirstErr(); err != nil {
				t.Errorf("produce during rotation: %v", err)
				return
			}
			produced.Add(1)
		}
	})
	ids := h.kms.act(t, key, ActionRotate)
	ack := h.waitAck(ids[0])
	if ack.State != DEKEnabled || ack.Version != h.kms.latestVersion(key) {
		t.Fatalf("ack %+v: want DEK_ENABLED with the new version", ack)
	}
	eventuallyWithin(t, reencryptionWait, "the re-encryption task ends", func() bool {
		tasks := h.tasks.all()
		status := ""
		if len(tasks) > 0 {
			status, _ = tasks[0].status()
		}
		return status == "completed" || status == "failed"
	})
	close(stop)
	wg.Wait()
	tasks := h.tasks.all()
	if len(tasks) != 1 || tasks[0].Description != TaskSyncingKMSState {
		t.Fatalf("tasks %+v: want one %q task", tasks, TaskSyncingKMSState)
	}
	if status, steps := tasks[0].status(); status != "completed" || len(steps) < 2 {
		t.Fatalf("task %s (%s) with progress %v: want completed after moving progress", status, tasks[0].Reason, steps)
	}
	cur, _ := plainDEK(t, d)
	d.mu.Lock()
	inUse, rec := d.obj.KeyIDsInUse(), *d.rec
	d.mu.Unlock()
	if cur.ID == old.ID || len(inUse) != 1 || inUse[0] != cur.ID || rec.DEKID != cur.ID || rec.NextDEKID != "" || rec.NextWrappedDEK != nil {
		t.Fatalf("keys in use %v, row %s/%s: want only a fresh DEK", inUse, rec.DEKID, rec.NextDEKID)
	}
	if n := scantest.FilesHolding(t, objects, append([]byte{byte(len(old.ID))}, old.ID...)); n != 0 {
		t.Fatalf("%d objects still sealed under the old DEK", n)
	}
	want := 300 + int(produced.Load())
	if got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), want); len(got) != want {
		t.Fatalf("read %d distinct records after the rotation, want %d", len(got), want)
	}
	h.restart() // the fresh DEK unwraps
	if got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), want); len(got) != want {
		t.Fatalf("read %d distinct records after a restart, want %d", len(got), want)
	}

	ctx := testCtx(t)
	if err := h.svc.Reclaim(ctx, inst.GUID); err != nil {
		t.Fatal(err)
	}
	if n := countFiles(t, objects); n != 0 {
		t.Fatalf("%d objects left after the deployment was reclaimed", n)
	}
}

// TestALogIsNeverOpenedEmptyWhereItIsNot restarts Keyline with and without
// --object-store under deployments whose data is elsewhere: they stay
// locked, saying where their data is, rather than serve an empty log.
func TestALogIsNeverOpenedEmptyWhereItIsNot(t *testing.T) {
	h, _ := objectStoreHarness(t)
	onObjects, _ := h.provisionWithKey()
	objectStore := h.configure
	h.configure = nil
	h.restart()
	onDisk, _ := h.provisionWithKey()
	locked := func(inst Instance, want string) {
		t.Helper()
		eventually(t, "the deployment is locked", func() bool {
			_, lock, _ := h.deployment(inst.GUID).snapshot()
			return strings.Contains(lock, want)
		})
	}
	locked(onObjects, "start Keyline with --object-store")
	h.configure = objectStore
	h.restart()
	locked(onDisk, "start Keyline without --object-store")
	h.createTopic(onObjects, "orders", 1) // served again
}

// archiveRestorer restores the one backup it holds, written by backupOf,
// as the backup service does, without its volumes and access checks.
type archiveRestorer struct {
	key    *archive.LocalRootKey
	backup []byte
}

func (r *archiveRestorer) RestoreBackup(ctx context.Context, inst Instance, backupID string, dst archive.Target) error {
	rd, err := archive.NewReader(ctx, bytes.NewReader(r.backup), r.key)
	if err != nil {
		return err
	}
	defer rd.Close()
	return dst.Fill(ctx, func(l archive.Log) error { return archive.Restore(ctx, rd, l, nil) })
}

// backupOf snapshots the deployment's log through ReadLog, as a backup does.
func (r *archiveRestorer) backupOf(t *testing.T, h *harness, guid string) {
	t.Helper()
	ctx := testCtx(t)
	var buf bytes.Buffer
	w, err := archive.NewWriter(ctx, &buf, r.key, archive.WriterOptions{BackupID: "b1", Created: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.svc.ReadLog(ctx, guid, func(l archive.Log) error { return archive.Snapshot(ctx, l, w, nil) }); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	r.backup = buf.Bytes()
}

// TestBackupOfADeploymentOnObjectStorageRestoresIntoANewOne backs up a
// deployment whose data is on object storage and provisions another one
// from the backup: its data goes to object storage too, and it serves
// every record, and the committed offsets.
func TestBackupOfADeploymentOnObjectStorageRestoresIntoANewOne(t *testing.T) {
	h, srv := objectStoreHarness(t)
	key, err := archive.NewLocalRootKey("crn:v1:bluemix:public:kms:us-south:a/acct:inst:key:k1", "v1", seal.RandomKey())
	if err != nil {
		t.Fatal(err)
	}
	r := &archiveRestorer{key: key}
	objectStore := h.configure
	h.configure = func(c *Config) { objectStore(c); c.Restorer = r }
	h.restart()
	src, _ := h.provisionWithKey()
	h.createTopic(src, "orders", 3)
	produceN(t, h.client(src, auth.RoleWriter), "orders", "rec", 500)
	group := h.client(src, auth.RoleReader, kgo.ConsumeTopics("orders"), kgo.ConsumerGroup("billing"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	want := consumeAll(t, group, 500)
	if err := group.CommitUncommittedOffsets(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	r.backupOf(t, h, src.GUID)

	dst := newInstance()
	key2 := h.kms.addKey(t, testAccount, "us-south", kpInstance, false)
	if _, err := h.svc.Provision(testCtx(t), dst, map[string]any{ParamDiskKey: key2, ParamBackupID: "b1"}); err != nil {
		t.Fatal(err)
	}
	if n := countFiles(t, filepath.Join(srv.DataDir, "keyline-streams", objlog.ObjectPrefix(dst.GUID))); n == 0 {
		t.Fatal("the restored deployment has no object in the bucket")
	}
	if n := countFiles(t, h.deployment(dst.GUID).dir); n != 0 {
		t.Fatalf("%d files on the local disk of the restored deployment", n)
	}
	got := consumeAll(t, h.client(dst, auth.RoleReader, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart())), 500)
	if len(got) != len(want) {
		t.Fatalf("restored %d records, want %d", len(got), len(want))
	}
	for k := range want {
		if _, ok := got[k]; !ok {
			t.Fatalf("record %q is not restored", k)
		}
	}
	// The group resumes after what it committed: nothing more to read.
	resumed := h.client(dst, auth.RoleReader, kgo.ConsumeTopics("orders"), kgo.ConsumerGroup("billing"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	fctx, cancel := context.WithTimeout(testCtx(t), 3*time.Second)
	defer cancel()
	if fs := resumed.PollFetches(fctx); fs.NumRecords() != 0 {
		t.Fatalf("the restored group read %d records again", fs.NumRecords())
	}
}

// TestInterruptedReencryptionOnObjectStorageResumesAfterRestart leaves what
// a crash in the middle of a rotation leaves (the next DEK stored wrapped,
// the metadata re-sealed under it, the objects still under the old one):
// the restarted Keyline opens the store with both DEKs, finishes, and
// deletes the old DEK.
func TestInterruptedReencryptionOnObjectStorageResumesAfterRestart(t *testing.T) {
	h, _ := objectStoreHarness(t)
	inst, _ := h.provisionWithKey()
	h.createTopic(inst, "orders", 2)
	produceN(t, h.client(inst, auth.RoleWriter), "orders", "o", 500)
	d := h.deployment(inst.GUID)
	cur, _ := plainDEK(t, d)
	bucket := h.svc.cfg.ObjectStore
	h.svc.Close()

	next := h.storeNextDEK(d)
	ob, err := objlog.Open(context.Background(), h.db, bucket, objlog.Options{StoreID: inst.GUID, Keys: []*seglog.DEK{cur}, CompactEvery: -1})
	if err != nil {
		t.Fatal(err)
	}
	interrupted, cancel := context.WithCancel(context.Background())
	if err := ob.ReencryptTo(interrupted, &seglog.DEK{ID: next.ID, Key: bytes.Clone(next.Key)}, func(int64, int64) { cancel() }); err == nil {
		t.Fatal("a canceled re-encryption finished")
	}
	if ids := ob.KeyIDsInUse(); len(ids) != 2 {
		t.Fatalf("keys in use %v: the interrupted state needs data under both keys", ids)
	}
	ob.Close()

	h.start()
	h.waitResumed(inst.GUID, next.ID, func(d *deployment) []string { return d.obj.KeyIDsInUse() })
	if got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders")), 500); len(got) != 500 {
		t.Fatalf("consumed %d, want 500", len(got))
	}
}

// storeNextDEK stores a next DEK beside the deployment's DEK, as a rotation
// does before it re-encrypts, and returns it.
func (h *harness) storeNextDEK(d *deployment) *seglog.DEK {
	h.t.Helper()
	next := newDEK()
	rec, _, _ := d.snapshot()
	wrapped, version, err := h.kms.Wrap(d.ctx(context.Background()), rec.DiskKey, next.Key, d.aad(next.ID))
	if err != nil {
		h.t.Fatal(err)
	}
	rec.NextDEKID, rec.NextWrappedDEK, rec.NextKeyVersion = next.ID, wrapped, version
	if err := h.svc.saveRecord(context.Background(), d, &rec, nil); err != nil {
		h.t.Fatal(err)
	}
	return next
}

// waitResumed waits until the deployment's re-encryption to nextID, resumed
// at its start, finished: its only DEK is nextID, the only one its log
// (inUse) holds data under, and the task completed.
func (h *harness) waitResumed(guid, nextID string, inUse func(*deployment) []string) {
	h.t.Helper()
	d := h.deployment(guid)
	eventuallyWithin(h.t, reencryptionWait, "the re-encryption resumes and finishes", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.rec.NextDEKID == "" && d.reenc == nil
	})
	d.mu.Lock()
	ids, dekID := inUse(d), d.rec.DEKID
	d.mu.Unlock()
	if dekID != nextID || len(ids) != 1 || ids[0] != nextID {
		h.t.Fatalf("DEK %s, keys in use %v: want only %s", dekID, ids, nextID)
	}
	eventuallyWithin(h.t, reencryptionWait, "the resumed task completes", func() bool {
		tasks := h.tasks.all()
		if len(tasks) != 1 {
			return false
		}
		status, _ := tasks[0].status()
		return status == "completed"
	})
}
