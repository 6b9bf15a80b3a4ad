package rcapi

import (
	"context"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/errs"
)

func TestCreateInstanceReturnsTheRCRepresentation(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name, plan, target  string
		service, resourceID string
		region, planID      string
		broker              *recordingBroker
	}{
		{"kp-1", kmsPlan, "us-south", "kms", "ee41347f-b18e-4ca6-bf80-b5467c63f9a6", "us-south", kmsPlan, e.kms},
		{"kp by plan name", "tiered-pricing", "bluemix-eu-de", "kms", "ee41347f-b18e-4ca6-bf80-b5467c63f9a6", "eu-de", kmsPlan, e.kms},
		{"es-1", esPlan, "blue-ca-tor", "messagehub", "dff97f5c-bc5e-4455-b470-411c3edbe49c", "ca-tor", esPlan, e.es},
		{"es_2:by.name", "standard", "jp-tok", "messagehub", "dff97f5c-bc5e-4455-b470-411c3edbe49c", "jp-tok", esPlan, e.es},
		{"es named by resource_id", "standard", "us-east", "messagehub", "dff97f5c-bc5e-4455-b470-411c3edbe49c", "us-east", esPlan, e.es},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do("alice", "POST", "/v2/resource_instances", map[string]any{
				"name": tc.name, "target": tc.target, "resource_plan_id": tc.plan, "resource_group": "rg-1",
				"parameters": map[string]any{"disk_encryption_key_crn": keyCRN}, "resource_id": tc.service,
			}).want(t, http.StatusCreated)
			guid := res.str("guid")
			wantCRN := "crn:v1:bluemix:public:" + tc.service + ":" + tc.region + ":a/" + accountA + ":" + guid + "::"
			if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(guid) {
				t.Errorf("guid %q is not a UUID", guid)
			}
			for field, want := range map[string]string{
				"id": wantCRN, "crn": wantCRN, "url": "/v2/resource_instances/" + guid, "name": tc.name,
				"region_id": tc.region, "account_id": accountA, "resource_plan_id": tc.planID, "resource_id": tc.resourceID,
				"resource_group_id": "rg-1", "type": "service_instance", "sub_type": tc.service, "state": "active",
				"created_by": "IBMid-alice", "resource_keys_url": "/v2/resource_instances/" + guid + "/resource_keys",
			} {
				if got := res.str(field); got != want {
					t.Errorf("%s = %q, want %q", field, got, want)
				}
			}
			if res.body["deleted_at"] != nil || res.body["scheduled_reclaim_at"] != nil || res.str("created_at") == "" {
				t.Errorf("timestamps: created_at %v, deleted_at %v, scheduled_reclaim_at %v", res.body["created_at"], res.body["deleted_at"], res.body["scheduled_reclaim_at"])
			}
			op, _ := res.body["last_operation"].(map[string]any)
			if op["type"] != "create" || op["state"] != "succeeded" {
				t.Errorf("last_operation = %v", op)
			}
			params, _ := res.body["parameters"].(map[string]any)
			if params["disk_encryption_key_crn"] != keyCRN {
				t.Errorf("parameters = %v", params)
			}
			if tc.broker.count("Provision", guid) != 1 {
				t.Errorf("the %s broker was not asked to provision %s", tc.service, guid)
			}
		})
	}
}

func TestCreateInstanceAcceptsTopLevelKeyCRNs(t *testing.T) {
	e := newEnv(t)
	res := e.do("alice", "POST", "/v2/resource_instances", map[string]any{
		"name": "es", "target": "blue-us-south", "resource_group": "5g9f447903254bb58972a2f3f5a4c711", "resource_plan_id": esPlan,
		"disk_encryption_key_crn": keyCRN, "backup_encryption_key_crn": keyCRN,
	}).want(t, http.StatusCreated)
	params, _ := res.body["parameters"].(map[string]any)
	if params["disk_encryption_key_crn"] != keyCRN || params["backup_encryption_key_crn"] != keyCRN {
		t.Fatalf("top-level key CRNs were not merged into parameters: %v", params)
	}
}

func TestCreateInstanceRejectsBadRequests(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
		msg    string
	}{
		{"unknown plan", map[string]any{"name": "x", "target": "us-south", "resource_plan_id": "gold"}, 400, "INVALID_PLAN", `"gold" does not exist`},
		{"unknown service", map[string]any{"name": "x", "target": "us-south", "resource_id": "cloudant", "resource_plan_id": "standard"}, 400, "INVALID_SERVICE", `"cloudant" is not in the catalog`},
		{"plan of another service", map[string]any{"name": "x", "target": "us-south", "resource_id": "kms", "resource_plan_id": "standard"}, 400, "INVALID_PLAN", `"standard" is not a plan of Key Protect`},
		{"missing plan", map[string]any{"name": "x", "target": "us-south"}, 400, "MISSING_FIELD", "resource_plan_id"},
		{"unknown region", map[string]any{"name": "x", "target": "mars-north", "resource_plan_id": kmsPlan}, 400, "INVALID_TARGET", "us-south, us-east"},
		{"region prefix only", map[string]any{"name": "x", "target": "blue-", "resource_plan_id": kmsPlan}, 400, "INVALID_TARGET", "not a region"},
		{"missing target", map[string]any{"name": "x", "resource_plan_id": kmsPlan}, 400, "MISSING_FIELD", "target"},
		{"missing name", map[string]any{"target": "us-south", "resource_plan_id": kmsPlan}, 400, "MISSING_FIELD", "name"},
		{"bad name", map[string]any{"name": "a/b", "target": "us-south", "resource_plan_id": kmsPlan}, 400, "INVALID_NAME", "letters, digits"},
		{"long name", map[string]any{"name": strings.Repeat("n", 181), "target": "us-south", "resource_plan_id": kmsPlan}, 400, "INVALID_NAME", "180"},
		{"bad JSON", `{"name": "x",`, 400, "BAD_BODY_ERR", "truncated"},
		{"not JSON", `name=x`, 400, "BAD_BODY_ERR", "not valid JSON"},
		{"no body", ``, 400, "NO_BODY_ERR", "Missing body"},
		{"unknown field", map[string]any{"name": "x", "target": "us-south", "resource_plan_id": kmsPlan, "plan": "x"}, 400, "BAD_BODY_ERR", `"plan" is not allowed`},
		{"wrong type", map[string]any{"name": 7, "target": "us-south", "resource_plan_id": kmsPlan}, 400, "BAD_BODY_ERR", `"name" must be`},
		{"conflicting key CRNs", map[string]any{"name": "x", "target": "us-south", "resource_plan_id": kmsPlan,
			"disk_encryption_key_crn": keyCRN, "parameters": map[string]any{"disk_encryption_key_crn": "crn:v1:other"}}, 400, "CONFLICTING_PARAMETER", "given twice"},
		{"bad resource group", map[string]any{"name": "x", "target": "us-south", "resource_plan_id": kmsPlan, "resource_group": "a b"}, 400, "INVALID_RESOURCE_GROUP", "resource_group"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := e.do("alice", "POST", "/v2/resource_instances", tc.body).want(t, tc.status)
			if res.errorCode() != tc.code || !strings.Contains(res.str("message"), tc.msg) {
				t.Errorf("got code %q message %q, want %q mentioning %q", res.errorCode(), res.str("message"), tc.code, tc.msg)
			}
			if sc, _ := res.body["status_code"].(float64); int(sc) != tc.status {
				t.Errorf("status_code %v", res.body["status_code"])
			}
			if res.str("trace") == "" || res.str("trace") != res.header.Get("Correlation-Id") {
				t.Errorf("trace %q does not match the correlation id %q", res.str("trace"), res.header.Get("Correlation-Id"))
			}
		})
	}
	if n := len(e.kms.calls) + len(e.es.calls); n != 0 {
		t.Errorf("brokers were called %d times for rejected requests", n)
	}
}

func TestBrokerErrorFailsTheCreateWithItsMessage(t *testing.T) {
	e := newEnv(t)
	const policyMsg = "Missing or mis-configured S2S Authorization Policy. The service could not configure access to the encryption key"
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
		msg    string
	}{
		{"errs error keeps its kind, code and message", errs.E("streams.Provision", errs.Invalid, "S2S_POLICY_MISSING", policyMsg), 400, "S2S_POLICY_MISSING", policyMsg},
		{"conflict", errs.E("streams.Provision", errs.Conflict, "KEY_DISABLED", "The root key is disabled"), 409, "KEY_DISABLED", "The root key is disabled"},
		{"other errors are hidden", errBrokerDown, 500, "BROKER_ERROR", "could not complete"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.es.set(func(b *recordingBroker) { b.provisionErr = tc.err })
			res := e.do("alice", "POST", "/v2/resource_instances", map[string]any{"name": "es", "target": "us-south", "resource_plan_id": esPlan}).want(t, tc.status)
			if res.errorCode() != tc.code || !strings.Contains(res.str("message"), tc.msg) {
				t.Errorf("got %q %q, want %q %q", res.errorCode(), res.str("message"), tc.code, tc.msg)
			}
			if strings.Contains(res.raw, "10.0.0.7") {
				t.Errorf("the response leaks the broker's internal error: %s", res.raw)
			}
		})
	}
	e.es.set(func(b *recordingBroker) { b.provisionErr = nil })
	// The failed instances are recorded as failed, and not listed by default.
	failed := e.do("alice", "GET", "/v2/resource_instances?state=failed", nil).want(t, 200)
	if n := failed.body["rows_count"].(float64); n != 3 {
		t.Errorf("%v failed instances listed, want 3", n)
	}
	var first map[string]any
	for _, r := range failed.body["resources"].([]any) {
		op := r.(map[string]any)["last_operation"].(map[string]any)
		if op["state"] != "failed" {
			t.Errorf("failed instance's last_operation = %v", op)
		}
		if strings.Contains(op["description"].(string), "S2S") {
			first = r.(map[string]any)
		}
	}
	if first == nil {
		t.Fatalf("no failed instance says why: %s", failed.raw)
	}
	if n := e.do("alice", "GET", "/v2/resource_instances", nil).want(t, 200).body["rows_count"].(float64); n != 0 {
		t.Errorf("default list shows %v instances, want only active and provisioning ones", n)
	}
	// A failed instance can be deleted: it is removed at once.
	guid := first["guid"].(string)
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, http.StatusNoContent)
	if got := e.do("alice", "GET", "/v2/resource_instances/"+guid, nil).want(t, 200).str("state"); got != "removed" {
		t.Errorf("deleted failed instance is %s", got)
	}
}

func TestBrokerValidationErrorSurfaces(t *testing.T) {
	e := newEnv(t)
	res := e.do("alice", "POST", "/v2/resource_instances", map[string]any{"name": "es", "target": "us-south", "resource_plan_id": esPlan,
		"parameters": map[string]any{"disk_encryption_key_crn": "02fd6835-6001-4482-a892-13bd2085f75d"}}).want(t, 400)
	if res.errorCode() != "INVALID_KEY_CRN" || !strings.Contains(res.str("message"), "full CRN") {
		t.Errorf("got %s", res.raw)
	}
}

func TestBrokerWarningsAreShown(t *testing.T) {
	e := newEnv(t)
	e.es.set(func(b *recordingBroker) {
		b.warnings = []string{"The backup key is not in a region durable to region failure"}
	})
	res := e.createInstance("es", esPlan, nil)
	if w := res.header.Get("Warning"); !strings.Contains(w, "durable to region failure") {
		t.Errorf("Warning header = %q", w)
	}
	if ws, _ := res.body["warnings"].([]any); len(ws) != 1 {
		t.Errorf("warnings = %v", res.body["warnings"])
	}
}

func TestGetInstanceByGUIDOrEncodedCRN(t *testing.T) {
	e := newEnv(t)
	created := e.createInstance("kp", kmsPlan, nil)
	for _, id := range []string{created.str("guid"), escaped(created.str("crn"))} {
		res := e.do("alice", "GET", "/v2/resource_instances/"+id, nil).want(t, 200)
		if res.str("guid") != created.str("guid") || res.str("crn") != created.str("crn") {
			t.Errorf("GET %s returned %s", id, res.raw)
		}
	}
	for _, tc := range []struct{ id, code string }{
		{"6f1bd0c4-1c9c-4c3a-9f4f-58f8d7a5a0b1", "INSTANCE_NOT_FOUND"},
		{escaped("crn:v1:bluemix:public:kms:us-south:a/" + accountA + ":6f1bd0c4-1c9c-4c3a-9f4f-58f8d7a5a0b1::"), "INSTANCE_NOT_FOUND"},
		{escaped("crn:v1:bluemix:public:kms"), "INVALID_CRN"},
	} {
		res := e.do("alice", "GET", "/v2/resource_instances/"+tc.id, nil)
		if res.errorCode() != tc.code {
			t.Errorf("GET %s: %d %s", tc.id, res.status, res.raw)
		}
	}
}

func TestListInstancesFiltersAndPages(t *testing.T) {
	e := newEnv(t)
	guids := map[string]bool{}
	for i := range 5 {
		guids[e.createInstance("kp", kmsPlan, nil).str("guid")] = true
		if i < 2 {
			guids[e.createInstance("es", esPlan, nil).str("guid")] = true
		}
	}
	e.do("bob", "POST", "/v2/resource_instances", map[string]any{"name": "kp", "target": "us-south", "resource_plan_id": kmsPlan}).want(t, 201)

	seen := map[string]bool{}
	path, pages := "/v2/resource_instances?limit=3", 0
	for path != "" {
		res := e.do("alice", "GET", path, nil).want(t, 200)
		pages++
		for _, r := range res.body["resources"].([]any) {
			g := r.(map[string]any)["guid"].(string)
			if seen[g] {
				t.Errorf("instance %s listed twice", g)
			}
			seen[g] = true
		}
		if n, _ := res.body["rows_count"].(float64); int(n) != len(res.body["resources"].([]any)) {
			t.Errorf("rows_count %v", n)
		}
		path, _ = res.body["next_url"].(string)
		if path != "" && !strings.Contains(path, "limit=3") {
			t.Errorf("next_url %q dropped the other parameters", path)
		}
	}
	if pages != 3 || len(seen) != 7 {
		t.Errorf("%d pages, %d instances; want 3 pages of alice's 7 instances", pages, len(seen))
	}
	for g := range seen {
		if !guids[g] {
			t.Errorf("listed %s, which alice did not create", g)
		}
	}
	for _, tc := range []struct {
		query string
		n     int
	}{
		{"resource_plan_id=" + esPlan, 2},
		{"resource_id=dff97f5c-bc5e-4455-b470-411c3edbe49c", 2},
		{"resource_id=kms", 5},
		{"sub_type=kms", 5},
		{"name=es", 2},
		{"type=service_instance&name=kp", 5},
		{"type=resource_alias", 0},
		{"resource_group_id=default", 7},
		{"resource_group_id=other", 0},
		{"state=removed", 0},
		{"state=active,pending_reclamation", 7},
		{"updated_from=2026-03-01T08:00:00Z&updated_to=2026-03-01T10:00:00Z", 7},
		{"updated_from=2026-03-02T00:00:00Z", 0},
	} {
		res := e.do("alice", "GET", "/v2/resource_instances?"+tc.query, nil).want(t, 200)
		if n := int(res.body["rows_count"].(float64)); n != tc.n {
			t.Errorf("?%s: %d instances, want %d", tc.query, n, tc.n)
		}
	}
	for _, q := range []string{"limit=0", "limit=101", "limit=x", "start=garbage", "state=deleted", "updated_from=yesterday"} {
		res := e.do("alice", "GET", "/v2/resource_instances?"+q, nil).want(t, 400)
		if res.body["errors"] == nil {
			t.Errorf("?%s: %s", q, res.raw)
		}
	}
}

func TestUpdateInstance(t *testing.T) {
	e := newEnv(t)
	guid := e.createInstance("kp", kmsPlan, nil).str("guid")
	res := e.do("alice", "PATCH", "/v2/resource_instances/"+guid, map[string]any{"name": "kp renamed", "allow_cleanup": true}).want(t, 200)
	if res.str("name") != "kp renamed" || res.body["allow_cleanup"] != true {
		t.Errorf("update not applied: %s", res.raw)
	}
	if op := res.body["last_operation"].(map[string]any); op["type"] != "update" || op["state"] != "succeeded" {
		t.Errorf("last_operation %v", op)
	}
	if got := e.do("alice", "GET", "/v2/resource_instances/"+guid, nil).str("name"); got != "kp renamed" {
		t.Errorf("name after update %q", got)
	}
	for _, tc := range []struct {
		body any
		code string
	}{
		{map[string]any{"parameters": map[string]any{"disk_encryption_key_crn": keyCRN}}, "PARAMETERS_NOT_UPDATABLE"},
		{map[string]any{"resource_plan_id": esPlan}, "INVALID_PLAN"},
		{map[string]any{"name": "bad/name"}, "INVALID_NAME"},
		{map[string]any{"colour": "red"}, "BAD_BODY_ERR"},
		{"", "NO_BODY_ERR"},
	} {
		res := e.do("alice", "PATCH", "/v2/resource_instances/"+guid, tc.body).want(t, 400)
		if res.errorCode() != tc.code {
			t.Errorf("PATCH %v: %s", tc.body, res.raw)
		}
	}
}

func TestInstancesOfAnotherAccountAreInvisible(t *testing.T) {
	e := newEnv(t)
	guid := e.createInstance("kp", kmsPlan, nil).str("guid")
	crnPath := escaped(e.do("alice", "GET", "/v2/resource_instances/"+guid, nil).str("crn"))
	for _, tc := range []struct {
		token, method, path string
		body                any
		status              int
	}{
		{"bob", "GET", "/v2/resource_instances/" + guid, nil, 404},
		{"bob", "GET", "/v2/resource_instances/" + crnPath, nil, 404},
		{"bob", "PATCH", "/v2/resource_instances/" + guid, map[string]any{"name": "mine"}, 404},
		{"bob", "DELETE", "/v2/resource_instances/" + guid, nil, 404},
		{"bob", "GET", "/v5/ibm/deployments/" + crnPath + "/tasks", nil, 404},
		{"viewer", "GET", "/v2/resource_instances/" + guid, nil, 200},
		{"viewer", "PATCH", "/v2/resource_instances/" + guid, map[string]any{"name": "mine"}, 403},
		{"viewer", "DELETE", "/v2/resource_instances/" + guid, nil, 403},
		{"viewer", "POST", "/v2/resource_instances", map[string]any{"name": "x", "target": "us-south", "resource_plan_id": kmsPlan}, 403},
		{"nobody", "GET", "/v2/resource_instances/" + guid, nil, 403},
		{"", "GET", "/v2/resource_instances/" + guid, nil, 401},
		{"forged", "GET", "/v2/resource_instances", nil, 401},
	} {
		res := e.do(tc.token, tc.method, tc.path, tc.body)
		if res.status != tc.status || res.body["errors"] == nil && tc.status >= 400 {
			t.Errorf("%s %s %s: %d %s, want %d", tc.token, tc.method, tc.path, res.status, res.raw, tc.status)
		}
	}
	for token, n := range map[string]float64{"bob": 0, "nobody": 0, "viewer": 1} {
		if got := e.do(token, "GET", "/v2/resource_instances", nil).want(t, 200).body["rows_count"]; got != n {
			t.Errorf("%s lists %v instances, want %v", token, got, n)
		}
	}
	if got := e.do("alice", "GET", "/v2/resource_instances/"+guid, nil).str("name"); got != "kp" {
		t.Errorf("instance changed by others: name %q", got)
	}
}

// updatingBroker is a service that accepts parameter changes.
type updatingBroker struct {
	*recordingBroker
	updates []map[string]any
}

func (b *updatingBroker) UpdateParameters(ctx context.Context, inst controller.Instance, params map[string]any) error {
	if _, ok := params["disk_encryption_key_crn"]; ok {
		return errs.E("broker.UpdateParameters", errs.Invalid, "KEY_IMMUTABLE", "The disk key is set at create: create a new deployment to change it")
	}
	b.updates = append(b.updates, params)
	return nil
}

func TestParametersGoToABrokerThatAcceptsThem(t *testing.T) {
	e := newEnv(t)
	svc := controller.CatalogService{Name: "databases-for-redis", ID: "redis", DisplayName: "Databases for Redis",
		Plans: []controller.Plan{{ID: "redis-standard", Name: "standard-redis"}}, Regions: []string{"us-south"}}
	b := &updatingBroker{recordingBroker: newBroker()}
	if err := e.ctl.Register(svc, b); err != nil {
		t.Fatal(err)
	}
	e.policies.grants["IBMid-alice"] = append(e.policies.grants["IBMid-alice"], grant{"databases-for-redis", "", auth.RoleEditor})
	guid := e.createInstance("r", "redis-standard", map[string]any{"disk_encryption_key_crn": keyCRN, "members": 2.0}).str("guid")
	res := e.do("alice", "PATCH", "/v2/resource_instances/"+guid, map[string]any{"parameters": map[string]any{"members": 3}}).want(t, 200)
	params := res.body["parameters"].(map[string]any)
	if params["members"] != 3.0 || params["disk_encryption_key_crn"] != keyCRN || len(b.updates) != 1 {
		t.Errorf("parameters after update %v; broker saw %v", params, b.updates)
	}
	res = e.do("alice", "PATCH", "/v2/resource_instances/"+guid, map[string]any{"parameters": map[string]any{"disk_encryption_key_crn": "crn:v1:x"}}).want(t, 400)
	if res.errorCode() != "KEY_IMMUTABLE" {
		t.Errorf("refused update: %s", res.raw)
	}
	if got := e.do("alice", "GET", "/v2/resource_instances/"+guid, nil).body["parameters"].(map[string]any)["disk_encryption_key_crn"]; got != keyCRN {
		t.Errorf("a refused update changed the key to %v", got)
	}
	key := e.do("alice", "POST", "/v2/resource_keys", map[string]any{"name": "k", "source": guid}).want(t, 201)
	if key.str("role") != auth.RoleReader {
		t.Errorf("a service without a default key role gave a key role %s, want Reader", key.str("role"))
	}
	ev := e.events(accountA, "databases-for-redis.instance.update")
	if len(ev) != 2 || ev[0].Message != "Databases for Redis: update instance" || ev[1].Outcome != "failure" {
		t.Errorf("update events %+v", ev)
	}
}

func TestListShowsOnlyInstancesTheCallerMayRead(t *testing.T) {
	e := newEnv(t)
	var guids []string
	for range 5 {
		guids = append(guids, e.createInstance("kp", kmsPlan, nil).str("guid"))
	}
	e.policies.users["scoped"] = &auth.Principal{IAMID: "IBMid-scoped", AccountID: accountA, Name: "scoped", Type: auth.User}
	e.policies.grants["IBMid-scoped"] = []grant{{"kms", guids[1], auth.RoleViewer}, {"kms", guids[4], auth.RoleViewer}}
	var seen []string
	for path := "/v2/resource_instances?limit=1"; path != ""; {
		res := e.do("scoped", "GET", path, nil).want(t, 200)
		for _, r := range res.body["resources"].([]any) {
			seen = append(seen, r.(map[string]any)["guid"].(string))
		}
		path, _ = res.body["next_url"].(string)
	}
	if len(seen) != 2 || !slices.Contains(seen, guids[1]) || !slices.Contains(seen, guids[4]) {
		t.Errorf("scoped user listed %v, want only %s and %s", seen, guids[1], guids[4])
	}
	e.do("scoped", "GET", "/v2/resource_instances/"+guids[0], nil).want(t, 403)
}
