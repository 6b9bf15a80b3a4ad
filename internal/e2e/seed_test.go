package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
)

// TestSeedWalk follows the seed document in order, over HTTP, as a user of
// the API would: authorization, provisioning with the key's CRN, rotation,
// deletion with reclamation, force delete, restore and expiry.
func TestSeedWalk(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	account, _ := admin.account()

	kp := admin.createInstance("byok-kp", "kms", "tiered-pricing", "us-south", nil)
	kpGUID := kp["guid"].(string)
	diskKey, diskCRN := admin.createRootKey(kpGUID, "disk-key")
	_, backupCRN := admin.createRootKey(kpGUID, "backup-key")
	_, keepCRN := admin.createRootKey(kpGUID, "restore-key")
	_, expireCRN := admin.createRootKey(kpGUID, "expire-key")

	// "If the service authorization is not present before provisioning your
	// deployment with a key, the provision fails."
	params := map[string]any{"disk_encryption_key_crn": diskCRN, "backup_encryption_key_crn": backupCRN}
	body := map[string]any{"name": "es-1", "resource_id": "messagehub", "resource_plan_id": "standard", "target": "us-south", "parameters": params}
	ce := admin.fails(400, "POST", "/v2/resource_instances", nil, body)
	if !strings.Contains(ce.Message, "Authorization") {
		t.Fatalf("provisioning without an authorization: %q does not explain the missing authorization", ce.Message)
	}

	// Authorize messagehub -> kms with Reader and delegation.
	userPolicy := admin.authorize(account, "messagehub", kpGUID, true)

	dep := admin.must("POST", "/v2/resource_instances", nil, body)
	depCRN := dep["crn"].(string)
	if dep["state"] != "active" {
		t.Fatalf("deployment state %v, want active: %s", dep["state"], dump(dep))
	}

	// The registration on the disk key names the deployment.
	regs := admin.must("GET", client.Path("api", "v2", "keys", diskKey, "registrations"), kpHeader(kpGUID), nil)
	if !strings.Contains(dump(regs), depCRN) {
		t.Fatalf("the disk key's registrations do not name the deployment %s: %s", depCRN, dump(regs))
	}

	// Two entries in Authorizations: the user's delegator and the dependent
	// Block Storage one created by the deployment.
	var userDefined, dependent bool
	for _, p := range admin.authorizations(account) {
		s := dump(p)
		switch {
		case p["id"] == userPolicy["id"]:
			userDefined = strings.Contains(s, "AuthorizationDelegator") && strings.Contains(s, "serviceRole:Reader")
		case strings.Contains(s, `"is"`) && p["created_by_id"] == "crn-"+depCRN:
			dependent = strings.Contains(s, "serviceRole:Reader")
		}
	}
	if !userDefined || !dependent {
		t.Fatalf("authorizations: user-defined delegator %v, dependent is->kms created by the deployment %v:\n%s", userDefined, dependent, dump(admin.authorizations(account)))
	}

	// Rotate: a "Syncing KMS state" task completes and the registration
	// moves to the new key version.
	admin.must("POST", client.Path("api", "v2", "keys", diskKey, "actions", "rotate"), kpHeader(kpGUID), map[string]any{})
	meta := admin.must("GET", client.Path("api", "v2", "keys", diskKey, "metadata"), kpHeader(kpGUID), nil)
	newVersion := meta["resources"].([]any)[0].(map[string]any)["keyVersion"].(map[string]any)["id"].(string)
	waitFor(t, 20*time.Second, "the Syncing KMS state task to complete", func() bool {
		for _, task := range admin.tasks(depCRN) {
			if task["description"] == "Syncing KMS state" && task["status"] == "completed" && task["progress_percent"] == float64(100) {
				return true
			}
		}
		return false
	})
	waitFor(t, 10*time.Second, "the registration to show the new key version", func() bool {
		regs := admin.must("GET", client.Path("api", "v2", "keys", diskKey, "registrations"), kpHeader(kpGUID), nil)
		return strings.Contains(dump(regs), newVersion)
	})

	// Delete the deployment: it stays registered during reclamation, so the
	// key cannot be deleted without force.
	admin.must("DELETE", client.Path("v2", "resource_instances", dep["guid"].(string)), nil, nil)
	ce = admin.fails(409, "DELETE", client.Path("api", "v2", "keys", diskKey), kpHeader(kpGUID), nil)
	if ce.Code != "PROTECTED_RESOURCE_ERR" {
		t.Fatalf("key delete during reclamation: %s, want PROTECTED_RESOURCE_ERR", ce.Code)
	}
	admin.do("DELETE", client.Path("api", "v2", "keys", diskKey)+"?force=true", kpHeader(kpGUID), nil, nil)
	gone := admin.must("GET", client.Path("api", "v2", "keys", diskKey, "metadata"), kpHeader(kpGUID), nil)
	if gone["resources"].([]any)[0].(map[string]any)["state"] != float64(5) {
		t.Fatalf("force delete did not destroy the key: %s", dump(gone))
	}

	// A second deployment comes back from reclamation.
	dep2 := admin.createInstance("es-2", "messagehub", "standard", "us-south", map[string]any{"disk_encryption_key_crn": keepCRN})
	admin.must("DELETE", client.Path("v2", "resource_instances", dep2["guid"].(string)), nil, nil)
	recl := admin.must("GET", "/v1/reclamations?resource_instance_id="+dep2["guid"].(string), nil, nil)
	rs := recl["resources"].([]any)
	if len(rs) != 1 {
		t.Fatalf("reclamations of es-2: %s", dump(recl))
	}
	admin.must("POST", client.Path("v1", "reclamations", rs[0].(map[string]any)["id"].(string), "actions", "restore"), nil, map[string]any{})
	back := admin.must("GET", client.Path("v2", "resource_instances", dep2["guid"].(string)), nil, nil)
	if back["state"] != "active" {
		t.Fatalf("restored deployment state %v, want active", back["state"])
	}

	// A third one expires after 9 days; then a plain key delete succeeds.
	dep3 := admin.createInstance("es-3", "messagehub", "standard", "us-south", map[string]any{"disk_encryption_key_crn": expireCRN})
	admin.must("DELETE", client.Path("v2", "resource_instances", dep3["guid"].(string)), nil, nil)
	expireKey := expireCRN[strings.LastIndexByte(expireCRN, ':')+1:]
	admin.fails(409, "DELETE", client.Path("api", "v2", "keys", expireKey), kpHeader(kpGUID), nil)
	e.clock.Advance(9*24*time.Hour + time.Minute)
	admin = e.as(client.New(e.url, adminKey)) // the old token has expired
	waitFor(t, 20*time.Second, "the expired deployment to be reclaimed and the key to delete without force", func() bool {
		return admin.do("DELETE", client.Path("api", "v2", "keys", expireKey), kpHeader(kpGUID), nil, nil) == nil
	})
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
