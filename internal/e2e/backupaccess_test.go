package e2e

import (
	"net/http"
	"testing"

	"github.com/keyline/keyline/internal/client"
)

// viewerOf makes a service ID with the Viewer platform role on one
// deployment and returns its client.
func viewerOf(e *env, a *api, account, name string, dep map[string]any) *api {
	sid := a.must("POST", "/v1/serviceids", nil, map[string]any{"name": name, "account_id": account})
	key := a.must("POST", "/v1/apikeys", nil, map[string]any{"name": name + "-key", "iam_id": sid["iam_id"], "account_id": account})["apikey"].(string)
	a.must("POST", "/v1/policies", nil, map[string]any{
		"type":     "access",
		"subjects": []any{map[string]any{"attributes": []any{map[string]any{"name": "iam_id", "value": sid["iam_id"]}}}},
		"roles":    []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::role:Viewer"}},
		"resources": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": account},
			map[string]any{"name": "serviceName", "value": "messagehub"}, map[string]any{"name": "serviceInstance", "value": dep["guid"]}}}},
	})
	return e.as(client.New(e.url, key))
}

// TestBackupAccessFollowsIAM: a Viewer of a deployment lists and reads its
// backups but may not take one; a Viewer of another deployment may not
// list them (403, as for its tasks) and is told a backup does not exist;
// no token, no answer.
func TestBackupAccessFollowsIAM(t *testing.T) {
	e := start(t)
	b := newBYOK(t, e)
	a, c := b.deployment("es-a"), b.deployment("es-b")
	b.admin.mustBackUp(a["crn"].(string))
	id := b.admin.backups(a["crn"].(string))[0]["id"].(string)

	viewerA := viewerOf(e, b.admin, b.account, "viewer-a", a)
	if bs := viewerA.backups(a["crn"].(string)); len(bs) != 1 || bs[0]["id"] != id {
		t.Fatalf("a Viewer lists the backups: %s", dump(bs))
	}
	viewerA.must("GET", client.Path("v5", "ibm", "backups", id), nil, nil)
	viewerA.fails(403, "POST", client.Path("v5", "ibm", "deployments", a["crn"].(string), "backups"), nil, nil)

	viewerB := viewerOf(e, b.admin, b.account, "viewer-b", c)
	viewerB.fails(404, "GET", client.Path("v5", "ibm", "backups", id), nil, nil)
	viewerB.fails(403, "GET", client.Path("v5", "ibm", "deployments", a["crn"].(string), "backups"), nil, nil)

	resp, err := http.Get(e.url + client.Path("v5", "ibm", "backups", id))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("a backup read without a token: HTTP %d, want 401", resp.StatusCode)
	}
	b.admin.fails(404, "GET", client.Path("v5", "ibm", "backups", "no-such-backup"), nil, nil)
	kp := b.admin.must("GET", "/v2/resource_instances?resource_id=kms", nil, nil)["resources"].([]any)[0].(map[string]any)
	b.admin.fails(404, "POST", client.Path("v5", "ibm", "deployments", kp["crn"].(string), "backups"), nil, nil)
}
