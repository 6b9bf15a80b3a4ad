package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/server"
	"github.com/keyline/keyline/internal/store/storetest"
)

// TestBackupRoundTripOfObjectStorageOnPostgreSQL is the backup round trip
// with the deployments' data on object storage (versitygw) and the
// metadata in PostgreSQL: the backup reads the source's objects, the
// restore writes the new deployment's, and neither holds plain data.
func TestBackupRoundTripOfObjectStorageOnPostgreSQL(t *testing.T) {
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
	canary := backupRoundTrip(t, e)
	// Both deployments' data is in the bucket.
	if des, err := os.ReadDir(filepath.Join(s3.DataDir, "keyline-streams", "deployments")); err != nil || len(des) != 2 {
		t.Fatalf("%d deployments' data in the bucket (%v), want the source's and the restored one's", len(des), err)
	}
	assertNoCanary(t, s3.DataDir, canary)
	assertNoCanary(t, e.dir, canary)
}
