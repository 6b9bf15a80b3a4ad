package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/server"
	"github.com/keyline/keyline/internal/store/storetest"
)

// startOnObjects runs a Keyline whose metadata is in PostgreSQL and whose
// deployments' data is in a versitygw bucket; it skips the test without a
// PostgreSQL database.
func startOnObjects(t *testing.T) (*env, *volumetest.S3Server) {
	t.Helper()
	databaseURL := storetest.URL(t)
	if databaseURL == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set")
	}
	s3 := volumetest.StartS3(t)
	e := startIn(t, t.TempDir(), clock.NewFake(time.Now().UTC().Truncate(time.Second)), func(c *server.Config) {
		c.DatabaseURL = databaseURL
		c.ObjectStore = "s3://keyline-streams?endpoint=http://" + s3.Endpoint
		c.ObjectStoreAccessKey, c.ObjectStoreSecretKey = s3.AccessKey, s3.SecretKey
	})
	return e, s3
}

// TestBackupRoundTripOfObjectStorageOnPostgreSQL is the backup round trip
// with the deployments' data on object storage (versitygw) and the
// metadata in PostgreSQL: the backup reads the source's objects, the
// restore writes the new deployment's, and neither holds plain data.
func TestBackupRoundTripOfObjectStorageOnPostgreSQL(t *testing.T) {
	e, s3 := startOnObjects(t)
	canary := backupRoundTrip(t, e)
	// Both deployments' data is in the bucket.
	if des, err := os.ReadDir(filepath.Join(s3.DataDir, "keyline-streams", "deployments")); err != nil || len(des) != 2 {
		t.Fatalf("%d deployments' data in the bucket (%v), want the source's and the restored one's", len(des), err)
	}
	assertNoCanary(t, s3.DataDir, canary)
	assertNoCanary(t, e.dir, canary)
}

// TestRotationReencryptsObjectStorageOnPostgreSQL rotates the root key of
// a deployment on object storage through Key Protect: the Syncing KMS
// state task reaches 100 once every object was rewritten under a fresh DEK
// and the old objects are gone, and every record reads back.
func TestRotationReencryptsObjectStorageOnPostgreSQL(t *testing.T) {
	e, s3 := startOnObjects(t)
	admin := e.as(e.admin)
	kp := admin.keyProtect("objects-kp")
	dep := admin.provisionDeployment(kp, "rotating-objects")
	createTopic(t, dep.manager, "events", 3)
	values := numbered("before", 0, 3000)
	produceValues(t, franz(t, dep.writer, kgo.DefaultProduceTopic("events")), "events", values)
	objects := filepath.Join(s3.DataDir, "keyline-streams", "deployments", dep.guid)
	before, err := os.ReadDir(objects)
	if err != nil || len(before) == 0 {
		t.Fatalf("no object of the deployment in the bucket: %v", err)
	}

	admin.must("POST", client.Path("api", "v2", "keys", dep.keyID, "actions", "rotate"), kpHeader(kp), map[string]any{})
	var task map[string]any
	waitFor(t, 90*time.Second, "the Syncing KMS state task to complete", func() bool {
		var out map[string]any
		if admin.do("GET", client.Path("v5", "ibm", "deployments", dep.crn, "tasks"), nil, nil, &out) != nil {
			return false
		}
		for _, x := range out["tasks"].([]any) {
			if tk := x.(map[string]any); tk["description"] == "Syncing KMS state" {
				task = tk
			}
		}
		return task != nil && task["status"] != "running"
	})
	if task["status"] != "completed" || task["progress_percent"] != float64(100) {
		t.Fatalf("the Syncing KMS state task: %s", dump(task))
	}
	for _, de := range before {
		if _, err := os.Stat(filepath.Join(objects, de.Name())); err == nil {
			t.Fatalf("object %s, sealed under the old DEK, is still in the bucket", de.Name())
		}
	}
	cons := franz(t, dep.reader, kgo.ConsumeTopics("events"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err := sameSet(recordValues(consumeRecords(t, cons, len(values))), values); err != nil {
		t.Fatalf("after the rotation: %v", err)
	}
}
