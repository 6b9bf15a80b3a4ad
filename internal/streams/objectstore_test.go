package streams

import (
	"context"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/streams/objlog"
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

	// A rotation rewraps the DEK; the re-encryption it cannot do yet is a
	// failed task that says so, and the data stays readable.
	ids := h.kms.act(t, key, ActionRotate)
	ack := h.waitAck(ids[0])
	if ack.State != DEKEnabled || ack.Version != h.kms.latestVersion(key) {
		t.Fatalf("ack %+v: want DEK_ENABLED with the new version", ack)
	}
	tasks := h.tasks.all()
	if len(tasks) != 1 || tasks[0].Description != TaskSyncingKMSState {
		t.Fatalf("tasks %+v: want one %q task", tasks, TaskSyncingKMSState)
	}
	if status, _ := tasks[0].status(); status != "failed" || !strings.Contains(tasks[0].Reason, "not yet re-encrypted") {
		t.Fatalf("task %s (%s): want failed, saying the data is not re-encrypted", status, tasks[0].Reason)
	}
	h.restart() // the rewrapped DEK unwraps
	read()

	ctx := testCtx(t)
	if err := h.svc.ReadLog(ctx, inst.GUID, nil); err == nil || !strings.Contains(err.Error(), "object storage") {
		t.Fatalf("ReadLog of a deployment on object storage = %v, want a refusal", err)
	}
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
