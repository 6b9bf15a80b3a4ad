package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
)

// The seed's rules for removing backup keys and authorizations, each with
// two deployments sharing one backup key.

// TestDeletedBlockStorageAuthorizationIsRecreated deletes the is -> kms
// authorization the deployments made: Keyline re-creates it (audited as
// the deployment's doing) while the user's delegation stands, and both
// deployments sharing the key keep backing up, their backups restorable.
// Each has its own backup volume, which block storage (is) created.
func TestDeletedBlockStorageAuthorizationIsRecreated(t *testing.T) {
	e := start(t)
	b := newBYOK(t, e)
	a, c := b.deployment("es-a"), b.deployment("es-b")
	for _, d := range []map[string]any{a, c} {
		b.admin.mustBackUp(d["crn"].(string))
	}
	dep := b.dependent()
	if dep == nil {
		t.Fatalf("no is -> kms authorization created by a deployment: %s", dump(b.admin.authorizations(b.account)))
	}
	b.deletePolicy(dep)
	var again map[string]any
	waitFor(t, 10*time.Second, "the is -> kms authorization to be re-created", func() bool {
		again = b.dependent()
		return again != nil && again["id"] != dep["id"]
	})
	recreated := false
	for _, ev := range b.admin.events("iam-am.policy.create", "success") {
		if ev["target"].(map[string]any)["id"] != nil && strings.Contains(dump(ev), again["id"].(string)) &&
			strings.HasPrefix(ev["initiator"].(map[string]any)["id"].(string), "crn-crn:") {
			recreated = true
		}
	}
	if !recreated {
		t.Fatalf("no audit event of the deployment re-creating authorization %s: %s", again["id"], dump(b.admin.events("iam-am.policy.create", "")))
	}
	volumes := map[string]int{}
	for _, ev := range b.admin.events("is.volume.create", "success") {
		if ev["initiator"].(map[string]any)["name"] == "is" {
			volumes[ev["requestData"].(map[string]any)["deploymentId"].(string)]++
		}
	}
	for _, d := range []map[string]any{a, c} {
		if volumes[d["crn"].(string)] != 1 {
			t.Fatalf("block storage (is) created %d backup volumes for %s, want 1: %v", volumes[d["crn"].(string)], d["name"], volumes)
		}
		b.admin.mustBackUp(d["crn"].(string))
		for _, bk := range b.admin.backups(d["crn"].(string)) {
			if bk["status"] != "completed" || bk["is_restorable"] != true {
				t.Fatalf("a lasting effect on %s's backups: %s", d["name"], dump(bk))
			}
		}
	}
}

// TestDeletedDelegatorAloneBreaksNothingUntilTheDependentGoes deletes the
// user's delegator authorization: backups go on under the dependent one;
// once that is deleted too it cannot be re-created, and every deployment
// sharing the key fails its backups, saying why and how to fix it.
func TestDeletedDelegatorAloneBreaksNothingUntilTheDependentGoes(t *testing.T) {
	e := start(t)
	b := newBYOK(t, e)
	a, c := b.deployment("es-a"), b.deployment("es-b")
	b.deletePolicy(b.delegator)
	for _, d := range []map[string]any{a, c} {
		b.admin.mustBackUp(d["crn"].(string))
	}
	if evs := b.admin.events("iam-am.policy.create", "failure"); len(evs) != 0 {
		t.Fatalf("backups under a standing dependent authorization tried to re-create it: %s", dump(evs))
	}
	dep := b.dependent()
	b.deletePolicy(dep)
	// The reconciler tries, and IAM refuses it for lack of delegation.
	waitFor(t, 10*time.Second, "a refused re-creation in the audit trail", func() bool {
		return len(b.admin.events("iam-am.policy.create", "failure")) > 0
	})
	if b.dependent() != nil {
		t.Fatal("the dependent authorization was re-created without the delegation")
	}
	for _, d := range []map[string]any{a, c} {
		b.admin.mustFailBackup(d["crn"].(string), "not authorized", "AuthorizationDelegator", "keyline iam authorization-policy-create messagehub kms Reader,AuthorizationDelegator")
		for _, bk := range b.admin.backups(d["crn"].(string)) {
			if bk["is_restorable"] == true {
				t.Fatalf("a backup of %s is restorable though no identity may unwrap its key: %s", d["name"], dump(bk))
			}
		}
	}
}

// TestDeletingBothAuthorizationsFailsEveryBackupAtOnce deletes the
// delegator and the dependent authorization: the next backup of every
// deployment using the key fails, each a failed task and an audit event
// saying why and how to fix it; following the fix brings backups back.
func TestDeletingBothAuthorizationsFailsEveryBackupAtOnce(t *testing.T) {
	e := start(t)
	b := newBYOK(t, e)
	a, c := b.deployment("es-a"), b.deployment("es-b")
	b.admin.mustBackUp(a["crn"].(string))
	b.deletePolicy(b.delegator)
	b.deletePolicy(b.dependent())
	for _, d := range []map[string]any{a, c} {
		b.admin.mustFailBackup(d["crn"].(string), b.keyCRN, "Fix: create that authorization")
		failed := 0
		for _, task := range b.admin.tasks(d["crn"].(string)) {
			if task["resource_type"] == "backup" && task["status"] == "failed" {
				failed++
			}
		}
		if failed != 1 {
			t.Fatalf("%s has %d failed backup tasks, want 1: %s", d["name"], failed, dump(b.admin.tasks(d["crn"].(string))))
		}
	}
	// The fix the reason gives.
	b.admin.authorize(b.account, "messagehub", b.kpGUID, true)
	for _, d := range []map[string]any{a, c} {
		b.admin.mustBackUp(d["crn"].(string))
	}
	if b.dependent() == nil {
		t.Fatal("the block storage authorization was not re-created once the delegation was back")
	}
}

// TestDeletingTheBackupKeyShredsBackups force-deletes the shared backup
// key: the existing backups can no longer be restored, and the other
// deployment fails its next backup, saying the key was deleted.
func TestDeletingTheBackupKeyShredsBackups(t *testing.T) {
	e := start(t)
	b := newBYOK(t, e)
	a, c := b.deployment("es-a"), b.deployment("es-b")
	b.admin.mustBackUp(a["crn"].(string))
	b.admin.mustBackUp(c["crn"].(string))
	b.admin.must("DELETE", client.Path("api", "v2", "keys", b.keyID)+"?force=true", kpHeader(b.kpGUID), nil)

	shredded := b.admin.backups(a["crn"].(string))
	if len(shredded) != 1 || shredded[0]["status"] != "completed" || shredded[0]["is_restorable"] != false {
		t.Fatalf("after the key's deletion the backup must not be restorable: %s", dump(shredded))
	}
	body := map[string]any{"name": "es-restored", "resource_id": "messagehub", "resource_plan_id": "standard", "target": "us-south",
		"parameters": map[string]any{"backup_id": shredded[0]["id"]}}
	ce := b.admin.fails(400, "POST", "/v2/resource_instances", nil, body)
	if !strings.Contains(ce.Message, "was deleted") || !strings.Contains(ce.Message, "Nothing was restored") {
		t.Fatalf("restoring a shredded backup: %q does not say the key was deleted", ce.Message)
	}
	b.admin.mustFailBackup(c["crn"].(string), "was deleted", "kp key restore")
}
