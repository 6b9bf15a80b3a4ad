package console_test

import (
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/keyline/keyline/internal/console"
	"github.com/keyline/keyline/internal/httpapi"
)

// Throwaway: canned API answers to eyeball the pages. Not committed.
func TestPreview(t *testing.T) {
	if os.Getenv("PREVIEW") == "" {
		t.Skip()
	}
	idp := newIdentityEdge()
	api := http.NewServeMux()
	base := idp.handler()
	api.Handle("POST /identity/token", base)
	kmsCRN := "crn:v1:bluemix:public:kms:us-south:a/acct1:kp-1111::"
	depCRN := "crn:v1:bluemix:public:messagehub:us-south:a/acct1:es-2222::"
	keyCRN := "crn:v1:bluemix:public:kms:us-south:a/acct1:kp-1111:key:k-1"
	j := func(v any) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) { httpapi.WriteJSON(w, 200, v) }
	}
	inst := func(guid, crn, name, sub, state string, ext map[string]any, params map[string]any) map[string]any {
		return map[string]any{"guid": guid, "crn": crn, "id": crn, "name": name, "sub_type": sub, "state": state, "region_id": "us-south",
			"resource_plan_id": "eventstreams-gen2-standard", "extensions": ext, "parameters": params, "created_at": "2026-11-27T10:00:00Z",
			"last_operation": map[string]any{"type": "create", "state": "succeeded", "description": "Provision completed"}}
	}
	kp := inst("kp-1111", kmsCRN, "byok-kp", "kms", "active", nil, nil)
	dep := inst("es-2222", depCRN, "es-orders", "messagehub", "inactive", map[string]any{"state_reason": "disabled: the disk key was deleted"}, map[string]any{"disk_encryption_key_crn": keyCRN, "backup_encryption_key_crn": keyCRN})
	api.Handle("GET /v2/resource_instances", j(map[string]any{"resources": []any{kp, dep}}))
	api.Handle("GET /v2/resource_instances/kp-1111", j(kp))
	api.Handle("GET /v2/resource_instances/es-2222", j(dep))
	api.Handle("GET /v2/resource_instances/es-2222/resource_keys", j(map[string]any{"resources": []any{map[string]any{"name": "app", "role": "Writer", "state": "active", "created_at": "2026-11-27T10:00:00Z"}}}))
	key := map[string]any{"id": "k-1", "name": "disk-key", "crn": keyCRN, "state": 5, "extractable": false, "lastRotateDate": "2026-11-27T11:00:00Z", "keyVersion": map[string]any{"id": "v-2"}}
	key2 := map[string]any{"id": "k-2", "name": "backup-key", "crn": keyCRN + "2", "state": 1, "extractable": false}
	api.Handle("GET /api/v2/keys", j(map[string]any{"resources": []any{key, key2}}))
	api.Handle("GET /api/v2/keys/{id}/metadata", j(map[string]any{"resources": []any{key}}))
	api.Handle("GET /api/v2/keys/{id}/policies", j(map[string]any{"resources": []any{map[string]any{"rotation": map[string]any{"enabled": true, "interval_month": 3}}}}))
	api.Handle("GET /api/v2/keys/{id}/registrations", j(map[string]any{"resources": []any{map[string]any{"keyId": "k-1", "resourceCrn": depCRN, "keyVersion": map[string]any{"id": "v-2"}}}}))
	api.Handle("GET /v5/ibm/deployments/{id}/tasks", j(map[string]any{"tasks": []any{map[string]any{"description": "Syncing KMS state", "status": "running", "progress_percent": 60, "resource_type": "instance", "created_at": "2026-11-27T11:00:00Z"}, map[string]any{"description": "Creating backup", "status": "completed", "progress_percent": 100, "resource_type": "backup", "created_at": "2026-11-27T10:00:00Z"}}}))
	api.Handle("GET /v5/ibm/deployments/{id}/backups", j(map[string]any{"backups": []any{map[string]any{"id": "crn:v1:bluemix:public:messagehub:us-south:a/acct1:es-2222:backup:b-1", "type": "on_demand", "status": "completed", "created_at": "2026-11-27T10:00:00Z"}}}))
	api.Handle("GET /messagehub/{guid}/admin/topics", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, 503, map[string]any{"errors": []any{map[string]any{"code": "locked", "message": "the deployment is disabled: its key was deleted"}}})
	}))
	api.Handle("GET /v1/policies", j(map[string]any{"policies": []any{
		map[string]any{"id": "p1", "type": "authorization", "subjects": []any{map[string]any{"attributes": []any{map[string]any{"name": "serviceName", "value": "messagehub"}}}},
			"roles": []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Reader"}, map[string]any{"role_id": "crn:v1:bluemix:public:iam::::role:AuthorizationDelegator"}},
			"resources": []any{map[string]any{"attributes": []any{map[string]any{"name": "serviceName", "value": "kms"}, map[string]any{"name": "serviceInstance", "value": "kp-1111"}}}}, "created_by_id": "IBMid-admin"},
		map[string]any{"id": "p2", "type": "authorization", "subjects": []any{map[string]any{"attributes": []any{map[string]any{"name": "serviceName", "value": "is"}}}},
			"roles": []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Reader"}},
			"resources": []any{map[string]any{"attributes": []any{map[string]any{"name": "serviceName", "value": "kms"}, map[string]any{"name": "serviceInstance", "value": "kp-1111"}}}}, "created_by_id": "crn-" + depCRN},
	}}))
	api.Handle("GET /v1/audit/events", j(map[string]any{"events": []any{map[string]any{"eventTime": "2026-11-27T11:00:00.00+0000", "action": "kms.secrets.delete", "outcome": "success", "severity": "critical", "message": "Key Protect: delete secrets", "target": map[string]any{"id": keyCRN}, "initiator": map[string]any{"name": "admin@example.com"}, "reason": map[string]any{"reasonCode": 204}}}}))
	c, err := console.New(console.Config{API: api, Authn: idp, Authz: idp})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	c.Register(mux)
	srv := httptest.NewServer(httpapi.Middleware(nil, mux))
	defer srv.Close()
	b := newBrowser(t, srv.URL)
	b.signIn(edgeAdminKey)
	for name, path := range map[string]string{"dash": "/console/", "auth": "/console/iam/authorizations", "authrm": "/console/iam/authorizations?remove=p2", "authform": "/console/iam/authorizations/create",
		"keys": "/console/kms/kp-1111", "keysdel": "/console/kms/kp-1111?delete=k-1", "catalog": "/console/catalog/event-streams", "dep": "/console/deployments/es-2222", "act": "/console/activity"} {
		b.open(path, "h1")
		b.shot("p-"+name, 1280, 390)
	}
	_ = chromedp.Void{}
}
