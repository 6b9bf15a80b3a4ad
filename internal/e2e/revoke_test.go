package e2e

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
)

// TestRevokedAuthorizationStopsTheNextUnwrap deletes the messagehub -> kms
// authorization of a running deployment: its next unwrap (on the key's
// re-enable) is refused with 403, the refusal is in the audit trail with the
// deployment as initiator, and the deployment stays locked, saying why.
func TestRevokedAuthorizationStopsTheNextUnwrap(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	account, _ := admin.account()
	kpGUID := admin.createInstance("kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
	keyID, keyCRN := admin.createRootKey(kpGUID, "disk")
	policy := admin.authorize(account, "messagehub", kpGUID, false)
	dep := admin.createInstance("es", "messagehub", "standard", "us-south", map[string]any{"disk_encryption_key_crn": keyCRN})
	depCRN := dep["crn"].(string)

	admin.must("DELETE", client.Path("v1", "policies", policy["id"].(string)), nil, nil)
	admin.must("POST", client.Path("api", "v2", "keys", keyID, "actions", "disable"), kpHeader(kpGUID), nil)
	admin.must("POST", client.Path("api", "v2", "keys", keyID, "actions", "enable"), kpHeader(kpGUID), nil)

	q := url.Values{"action": {"kms.secrets.unwrap"}, "outcome": {"failure"}}
	var denial map[string]any
	waitFor(t, 10*time.Second, "a refused unwrap by the deployment in the audit trail", func() bool {
		for _, ev := range admin.must("GET", "/v1/audit/events?"+q.Encode(), nil, nil)["events"].([]any) {
			ev := ev.(map[string]any)
			if ev["initiator"].(map[string]any)["id"] == "crn-"+depCRN {
				denial = ev
				return true
			}
		}
		return false
	})
	if code := denial["reason"].(map[string]any)["reasonCode"]; code != float64(403) {
		t.Fatalf("the refused unwrap has reason code %v, want 403: %s", code, dump(denial))
	}
	if denial["severity"] != "critical" {
		t.Fatalf("a 403 is critical in Activity Tracker, got %v", denial["severity"])
	}
	waitFor(t, 10*time.Second, "the deployment to be inactive with a reason", func() bool {
		got := admin.must("GET", client.Path("v2", "resource_instances", dep["guid"].(string)), nil, nil)
		reason, _ := got["state_reason"].(string)
		return got["state"] == "inactive" && strings.Contains(strings.ToLower(reason), "authoriz")
	})
}
