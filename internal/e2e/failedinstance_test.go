package e2e

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/keyline/keyline/internal/client"
)

// TestFailedProvisioningLeavesNoGhost provisions a deployment that fails
// (no messagehub -> kms authorization yet), then one that works under the
// same name: the failed instance is listed as failed, never hides the live
// one from a lookup by name, and can be deleted.
func TestFailedProvisioningLeavesNoGhost(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	kp := admin.createInstance("ghost-kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
	_, keyCRN := admin.createRootKey(kp, "orders-key")
	create := map[string]any{"name": "orders", "resource_id": "messagehub", "resource_plan_id": "standard", "target": "us-south",
		"parameters": map[string]any{"disk_encryption_key_crn": keyCRN}}
	admin.fails(http.StatusBadRequest, "POST", "/v2/resource_instances", nil, create)

	named := func(states string) []any {
		t.Helper()
		q := "/v2/resource_instances?name=orders"
		if states != "" {
			q += "&state=" + states
		}
		rs, _ := admin.must("GET", q, nil, nil)["resources"].([]any)
		return rs
	}
	failed := named("failed")
	if len(failed) != 1 || failed[0].(map[string]any)["state"] != "failed" {
		t.Fatalf("failed instances named orders: %s", dump(failed))
	}
	ghost := failed[0].(map[string]any)["guid"].(string)
	if rs := named(""); len(rs) != 0 {
		t.Fatalf("the default list shows the failed instance: %s", dump(rs))
	}

	// The name is free for the instance that works.
	account, _ := admin.account()
	admin.authorize(account, "messagehub", kp, false)
	live := admin.must("POST", "/v2/resource_instances", nil, create)
	if live["state"] != "active" {
		t.Fatalf("the second orders: %s", dump(live))
	}
	if rs := named(""); len(rs) != 1 || rs[0].(map[string]any)["guid"] != live["guid"] {
		t.Fatalf("lookup of orders: %s, want the live one only", dump(rs))
	}
	if rs := named("active,provisioning,inactive,pending_reclamation,failed"); len(rs) != 2 {
		t.Fatalf("every instance named orders: %s", dump(rs))
	}
	// The CLI looks names up in every state: the live one is meant.
	c := newCLI(t, e.url)
	c.must("login", "--apikey", adminKey)
	var shown map[string]any
	if err := json.Unmarshal([]byte(c.must("resource", "service-instance", "orders", "--output", "json")), &shown); err != nil || shown["guid"] != live["guid"] {
		t.Fatalf("keyline resource service-instance orders: %v %s, want %s", err, dump(shown), live["guid"])
	}

	// The failed one goes away.
	admin.must("DELETE", client.Path("v2", "resource_instances", ghost), nil, nil)
	if got := admin.must("GET", client.Path("v2", "resource_instances", ghost), nil, nil); got["state"] != "removed" {
		t.Fatalf("the failed instance after its delete: %s", dump(got))
	}
	if rs := named("failed"); len(rs) != 0 {
		t.Fatalf("failed instances after the delete: %s", dump(rs))
	}
	if info := admin.deploymentInfo(live["guid"].(string)); info["state"] != "active" {
		t.Fatalf("the live deployment after the failed one's delete: %s", dump(info))
	}
}
