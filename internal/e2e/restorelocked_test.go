package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
)

// TestRestoreWhileTheKeyIsGone restores deleted deployments whose root key
// was disabled or force-deleted during the reclamation window: the restore
// returns, the instance comes back inactive saying why, as a running
// deployment whose key goes does, and key events of other deployments keep
// taking effect.
func TestRestoreWhileTheKeyIsGone(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	kp := admin.keyProtect("restore-kp")
	for _, tc := range []struct{ name, method, suffix, reason string }{
		{"disabled", "POST", "/actions/disable", "disabled"},
		{"force-deleted", "DELETE", "?force=true", "deleted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dep := admin.provisionDeployment(kp, "restore-"+tc.name)
			admin.must("DELETE", client.Path("v2", "resource_instances", dep.guid)+"?recursive=true", nil, nil)
			var body any
			if tc.method == "POST" {
				body = map[string]any{}
			}
			admin.must(tc.method, client.Path("api", "v2", "keys", dep.keyID)+tc.suffix, kpHeader(kp), body)
			recl := admin.must("GET", "/v1/reclamations?resource_instance_id="+dep.guid, nil, nil)
			rs, _ := recl["resources"].([]any)
			if len(rs) != 1 {
				t.Fatalf("reclamations: %s", dump(recl))
			}
			id := rs[0].(map[string]any)["id"].(string)

			done := make(chan error, 1)
			go func() {
				done <- admin.do("POST", client.Path("v1", "reclamations", id, "actions", "restore"), nil, map[string]any{}, nil)
			}()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("restore: %v", err)
				}
			case <-time.After(60 * time.Second):
				t.Fatal("the restore did not return within a minute")
			}
			inst := admin.must("GET", client.Path("v2", "resource_instances", dep.guid), nil, nil)
			if reason, _ := inst["state_reason"].(string); inst["state"] != "inactive" || !strings.Contains(reason, tc.reason) {
				t.Fatalf("restored instance: %s, want inactive saying its key is %s", dump(inst), tc.reason)
			}
			if info := admin.deploymentInfo(dep.guid); info["state"] != "inactive" || info["state_reason"] != inst["state_reason"] {
				t.Fatalf("restored deployment: %s", dump(info))
			}
		})
	}

	other := admin.provisionDeployment(kp, "bystander")
	admin.must("POST", client.Path("api", "v2", "keys", other.keyID, "actions", "disable"), kpHeader(kp), map[string]any{})
	waitFor(t, 60*time.Second, "another deployment to lock when its key is disabled", func() bool {
		return admin.deploymentInfo(other.guid)["state"] == "inactive"
	})
}
