package e2e

import (
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
)

// TestBackupWithoutABackupKeyUsesTheDiskKey: a deployment with only a disk
// key backs up under it, the deployment itself (messagehub) wrapping the
// backup's key, not block storage; the backup restores.
func TestBackupWithoutABackupKeyUsesTheDiskKey(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	account, _ := admin.account()
	kpGUID := admin.createInstance("kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
	diskID, diskCRN := admin.createRootKey(kpGUID, "disk-key")
	admin.authorize(account, "messagehub", kpGUID, false)
	dep := admin.createInstance("es-disk", "messagehub", "standard", "us-south", map[string]any{"disk_encryption_key_crn": diskCRN})
	depCRN := dep["crn"].(string)
	wrapsBy := func(initiator string) int {
		n := 0
		for _, ev := range admin.events("kms.secrets.wrap", "success") {
			if ev["initiator"].(map[string]any)["id"] == initiator && ev["target"].(map[string]any)["id"] == diskCRN {
				n++
			}
		}
		return n
	}
	before := wrapsBy("crn-" + depCRN)
	admin.mustBackUp(depCRN)
	if after := wrapsBy("crn-" + depCRN); after != before+1 {
		t.Fatalf("the deployment wrapped its disk key %d times for the backup, want once", after-before)
	}
	for _, ev := range admin.events("kms.secrets.wrap", "") {
		if ev["initiator"].(map[string]any)["name"] == "is" {
			t.Fatalf("block storage used a key though the deployment has no backup key: %s", dump(ev))
		}
	}
	bk := admin.backups(depCRN)[0]
	if bk["encryption_key_crn"] != diskCRN || bk["is_restorable"] != true {
		t.Fatalf("a backup without a backup key is under the disk key: %s", dump(bk))
	}
	dst := admin.createInstance("es-disk-restored", "messagehub", "standard", "us-south", map[string]any{"backup_id": bk["id"], "disk_encryption_key_crn": diskCRN})
	if dst["state"] != "active" {
		t.Fatalf("restore: %s", dump(dst))
	}

	// With the disk key disabled the deployment is locked, and a backup
	// fails saying the data cannot be read and what to do.
	admin.must("POST", client.Path("api", "v2", "keys", diskID, "actions", "disable"), kpHeader(kpGUID), nil)
	waitFor(t, 10*time.Second, "the deployment to lock", func() bool {
		return admin.must("GET", client.Path("v2", "resource_instances", dep["guid"].(string)), nil, nil)["state"] == "inactive"
	})
	admin.mustFailBackup(depCRN, "cannot be read now", "disabled", "Fix:")
}
