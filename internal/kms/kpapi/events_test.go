package kpapi_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/seal"
)

// raw sends a request with the given token to the test instance and returns
// the status and body.
func (e *env) raw(method, path, token, body string, hdr ...string) (int, string, http.Header) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+"/api/v2/"+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Bluemix-Instance", instance)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestLifecycleEventsReachRegisteredServicesDurably(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "events", nil))
	unregistered := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "quiet", nil))
	allow := false
	dep := "crn:v1:bluemix:public:messagehub:us-south:a/" + account + ":dep-0001::"
	must[kms.Registration](t)(e.svc.CreateRegistration(asService(), instance, key.ID, dep, kms.RegistrationInput{PreventKeyDeletion: &allow}))
	wake := e.svc.Notifications("messagehub")

	ok(t, c.Rotate(e.ctx, key.ID, ""))
	ok(t, c.Rotate(e.ctx, unregistered.ID, ""))
	select {
	case <-wake:
	default:
		t.Fatal("no notification after a rotation")
	}
	// A service that restarts reads the same pending events from the database.
	master2, _ := seal.New(seal.RandomKey())
	restarted, err := kms.New(e.ctx, kms.Config{DB: e.db, Master: master2, Clock: e.clock, Authorizer: e.authz, Audit: kms.ActivityTracker(e.audit)})
	ok(t, err)
	evs := must[[]kms.KeyEvent](t)(restarted.PendingEvents(e.ctx, "messagehub"))
	if len(evs) != 1 || evs[0].Type != kms.EventRotate || evs[0].KeyID != key.ID || len(evs[0].ResourceCRNs) != 1 || evs[0].ResourceCRNs[0] != dep {
		t.Fatalf("pending = %+v", evs)
	}
	latest := must[*kp.Key](t)(c.GetKeyMetadata(e.ctx, key.ID))
	if evs[0].KeyVersion.ID != latest.KeyVersion.ID || evs[0].CorrelationID == "" {
		t.Fatalf("event version %s, key version %s", evs[0].KeyVersion.ID, latest.KeyVersion.ID)
	}
	if other := must[[]kms.KeyEvent](t)(e.svc.PendingEvents(e.ctx, "is")); len(other) != 0 {
		t.Fatalf("a service without registrations got %d events", len(other))
	}

	// Sync is refused within an hour of the rotation.
	wantErr(t, c.SyncAssociatedResources(e.ctx, key.ID), 409, "REQ_TOO_EARLY_ERR")

	ack := `{"metadata":{"collectionType":"application/vnd.ibm.kms.event_acknowledge+json","collectionTotal":1},"resources":[{"eventId":"` +
		evs[0].ID + `","adopterKeyState":"DEK_ENABLED","timestamp":"2026-03-01T10:00:00Z","keyStateData":{"rewrappedKeyVersion":"` +
		latest.KeyVersion.ID + `"},"deleteRegistration":false}]}`
	if st, body, _ := e.raw("POST", "event_ack", manager, ack); st != 403 {
		t.Fatalf("a user acknowledged a service's event: %d %s", st, body)
	}
	if st, body, _ := e.raw("POST", "event_ack", messagehb, ack); st != 204 {
		t.Fatalf("event_ack = %d %s", st, body)
	}
	if left := must[[]kms.KeyEvent](t)(e.svc.PendingEvents(e.ctx, "messagehub")); len(left) != 0 {
		t.Fatalf("%d events pending after ack", len(left))
	}
	if !hasEvent(t, e, "kms.secrets.ack-rotate", "success") {
		t.Fatal("no kms.secrets.ack-rotate event")
	}

	e.clock.Advance(time.Hour + time.Second)
	ok(t, c.SyncAssociatedResources(e.ctx, key.ID))
	ok(t, c.DisableKey(e.ctx, key.ID))
	ok(t, c.EnableKey(e.ctx, key.ID))
	_, err = c.DeleteKey(e.ctx, key.ID, kp.ReturnMinimal, kp.ForceOpt{Force: true})
	ok(t, err)
	e.clock.Advance(time.Minute)
	must[*kp.Key](t)(c.RestoreKey(e.ctx, key.ID))
	var types []string
	for _, ev := range must[[]kms.KeyEvent](t)(e.svc.PendingEvents(e.ctx, "messagehub")) {
		types = append(types, ev.Type)
	}
	if strings.Join(types, ",") != "rotate,disable,enable,delete,restore" {
		t.Fatalf("event types = %v", types)
	}
}

func hasEvent(t *testing.T, e *env, action, outcome string) bool {
	t.Helper()
	evs := must[[]kmsEvent](t)(auditEvents(e))
	for _, ev := range evs {
		if ev.Action == action && ev.Outcome == outcome {
			return true
		}
	}
	return false
}

// kmsEvent is the part of an Activity Tracker event the tests check.
type kmsEvent struct {
	Action, Target, Outcome, Initiator, CorrelationID string
	ReasonCode                                        int
	RequestData, ResponseData                         map[string]any
}

// auditEvents returns the account's Activity Tracker events, oldest first.
func auditEvents(e *env) ([]kmsEvent, error) {
	page, err := e.audit.Query(e.ctx, audit.Filter{AccountID: account, Limit: 500})
	out := make([]kmsEvent, len(page.Events))
	for i, ev := range page.Events {
		out[len(out)-1-i] = kmsEvent{Action: ev.Action, Target: ev.Target.ID, Outcome: ev.Outcome, Initiator: ev.Initiator.ID,
			CorrelationID: ev.CorrelationID, ReasonCode: ev.Reason.ReasonCode, RequestData: ev.RequestData, ResponseData: ev.ResponseData}
	}
	return out, err
}

func TestRegistrationsAreServiceToServiceOnly(t *testing.T) {
	e := newEnv(t)
	key := must[*kp.Key](t)(e.client(manager).CreateRootKey(e.ctx, "regs", nil))
	std := must[*kp.Key](t)(e.client(manager).CreateStandardKey(e.ctx, "std", nil))
	rc := "crn:v1:bluemix:public:messagehub:us-south:a/" + account + ":dep-0009::"
	path := "keys/" + key.ID + "/registrations/" + url.QueryEscape(rc) // %3A and %2F, as services send it
	body := `{"metadata":{"collectionType":"application/vnd.ibm.kms.registration_input+json","collectionTotal":1},"resources":[{"preventKeyDeletion":false,"description":"deployment disk"}]}`
	st, resp, _ := e.raw("POST", path, manager, body)
	if st != 403 || !strings.Contains(resp, "SERVICE_ONLY_ERR") {
		t.Fatalf("user registration = %d %s", st, resp)
	}
	if st, resp, _ = e.raw("POST", path, messagehb, body); st != 201 || !strings.Contains(resp, rc) {
		t.Fatalf("service registration = %d %s", st, resp)
	}
	if st, resp, _ = e.raw("POST", path, messagehb, body); st != 409 {
		t.Fatalf("duplicate registration = %d %s", st, resp)
	}
	foreign := "keys/" + key.ID + "/registrations/" + url.PathEscape("crn:v1:bluemix:public:is:us-south:a/"+account+":vol-1::")
	if st, resp, _ = e.raw("POST", foreign, messagehb, body); st != 403 || !strings.Contains(resp, "RESOURCE_OWNER_ERR") {
		t.Fatalf("registration of another service's resource = %d %s", st, resp)
	}
	stdPath := "keys/" + std.ID + "/registrations/" + url.PathEscape(rc)
	if st, resp, _ = e.raw("POST", stdPath, messagehb, body); st != 422 || !strings.Contains(resp, "KEY_ROOT_REQ_REG_ERR") {
		t.Fatalf("registration on a standard key = %d %s", st, resp)
	}
	patch := `{"metadata":{"collectionType":"application/vnd.ibm.kms.registration_input+json","collectionTotal":1},"resources":[{"preventKeyDeletion":true}]}`
	if st, resp, _ = e.raw("PATCH", path, messagehb, patch); st != 200 || !strings.Contains(resp, `"preventKeyDeletion":true`) ||
		!strings.Contains(resp, "deployment disk") {
		t.Fatalf("patch = %d %s", st, resp)
	}
	bogusVersion := `{"metadata":{"collectionType":"application/vnd.ibm.kms.registration_input+json","collectionTotal":1},"resources":[{"keyVersionId":"00000000-0000-4000-8000-000000000000"}]}`
	if st, resp, _ = e.raw("PATCH", path, messagehb, bogusVersion); st != 422 || !strings.Contains(resp, "KEY_VERSION_INVALID") {
		t.Fatalf("patch with a foreign version = %d %s", st, resp)
	}
	if st, resp, _ = e.raw("GET", "keys/registrations?preventKeyDeletion=true&totalCount=true", reader, ""); st != 200 || !strings.Contains(resp, `"totalCount":1`) {
		t.Fatalf("list = %d %s", st, resp)
	}
	if st, resp, _ = e.raw("GET", "keys/registrations?urlEncodedResourceCRNQuery="+url.QueryEscape("crn:v1:*:public:messagehub:us-south:a/x:*::"), reader, ""); st != 400 {
		t.Fatalf("wildcard in the first 8 segments = %d %s", st, resp)
	}
	if st, _, _ = e.raw("DELETE", path, manager, ""); st != 403 {
		t.Fatalf("user deleted a registration: %d", st)
	}
	if st, resp, _ = e.raw("DELETE", path, messagehb, ""); st != 204 {
		t.Fatalf("service delete = %d %s", st, resp)
	}
}

func TestOddRequestsGetKeyProtectErrors(t *testing.T) {
	e := newEnv(t)
	key := must[*kp.Key](t)(e.client(manager).CreateRootKey(e.ctx, "odd", nil))
	protected := must[*kp.Key](t)(e.client(manager).CreateRootKey(e.ctx, "protected", nil))
	no := false
	must[kms.Registration](t)(e.svc.CreateRegistration(asService(), instance, protected.ID,
		"crn:v1:bluemix:public:messagehub:us-south:a/"+account+":dep-0003::", kms.RegistrationInput{PreventKeyDeletion: &no}))
	wrapPath := "keys/" + key.ID + "/actions/wrap"
	big := `{"plaintext":"` + strings.Repeat("A", 70000) + `"}`
	cases := []struct {
		name, method, path, body string
		hdr                      []string
		status                   int
		code                     string
	}{
		{"collection total mismatch", "POST", "keys", `{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":2},"resources":[{"name":"ab"}]}`, nil, 400, "COLLECTION_TOTAL_MISMATCH_ERR"},
		{"two resources", "POST", "keys", `{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":2},"resources":[{"name":"ab"},{"name":"cd"}]}`, nil, 400, "BAD_BODY_ERR"},
		{"no metadata", "POST", "keys", `{"resources":[{"name":"ab"}]}`, nil, 400, "BAD_BODY_ERR"},
		{"malformed json", "POST", "keys", `{"metadata":`, nil, 400, "BAD_BODY_ERR"},
		{"unknown field", "POST", "keys", `{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"ab","colour":"red"}]}`, nil, 400, "BAD_BODY_ERR"},
		{"policy on plain create", "POST", "keys", `{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"ab","rotation":{"enabled":true}}]}`, nil, 400, "BAD_BODY_ERR"},
		{"missing body", "POST", "keys", "", nil, 400, "NO_BODY_ERR"},
		{"bad base64 plaintext", "POST", wrapPath, `{"plaintext":"***"}`, nil, 400, "INVALID_FIELD_ERR"},
		{"oversize body", "POST", wrapPath, big, nil, 413, "BODY_TOO_LARGE_ERR"},
		{"unwrap without body", "POST", "keys/" + key.ID + "/actions/unwrap", "", nil, 400, "NO_BODY_ERR"},
		{"unwrap garbage", "POST", "keys/" + key.ID + "/actions/unwrap", `{"ciphertext":"aGVsbG8gd29ybGQ="}`, nil, 422, "UNPROCESSABLE_CIPHERTEXT_ERR"},
		{"delete protected", "DELETE", "keys/" + protected.ID, "", nil, 409, "PROTECTED_RESOURCE_ERR"},
		{"too much aad", "POST", wrapPath, `{"aad":["` + strings.Repeat("x", 256) + `"]}`, nil, 400, "INVALID_FIELD_ERR"},
		{"unknown action", "POST", "keys/" + key.ID + "/actions/explode", `null`, nil, 400, "INVALID_QUERY_PARAM_ERR"},
		{"bad limit", "GET", "keys?limit=0", "", nil, 400, "INVALID_QUERY_PARAM_ERR"},
		{"bad state", "GET", "keys?state=4", "", nil, 400, "INVALID_QUERY_PARAM_ERR"},
		{"missing instance", "GET", "keys", "", []string{"Bluemix-Instance", ""}, 400, "INVALID_HEADER_ERR"},
		{"unknown path", "GET", "nothing/here", "", nil, 404, "NOT_FOUND_ERR"},
		{"registrations is not an alias", "GET", "keys/registrations", "", nil, 200, ""},
		{"case-insensitive fields", "PATCH", "keys/" + key.ID, `{"KeyRingID":"default"}`, nil, 200, ""},
		{"null body on enable", "POST", "keys/" + key.ID + "/actions/disable", `null`, nil, 204, ""},
		{"legacy action query", "POST", "keys/" + key.ID + "?action=enable", ``, nil, 204, ""},
		{"wrap with empty object", "POST", wrapPath, `{}`, nil, 200, ""},
		{"create as text/plain", "POST", "keys", `{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"ab"}]}`, []string{"Content-Type", "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE_ERR"},
		{"create as application/json", "POST", "keys", `{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"ab"}]}`, []string{"Content-Type", "application/json; charset=utf-8"}, 201, ""},
		{"json content type variant", "POST", wrapPath, `{"aad":["a"]}`, []string{"Content-Type", "application/vnd.ibm.kms.key_action+json"}, 200, ""},
		{"json with charset", "POST", wrapPath, `{}`, []string{"Content-Type", "application/json; charset=utf-8"}, 200, ""},
		{"wrap as a form", "POST", wrapPath, `{}`, []string{"Content-Type", "application/x-www-form-urlencoded"}, 415, "UNSUPPORTED_MEDIA_TYPE_ERR"},
		{"policies as text", "PUT", "keys/" + key.ID + "/policies", `{}`, []string{"Content-Type", "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE_ERR"},
		{"import token as text", "POST", "import_token", `{}`, []string{"Content-Type", "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE_ERR"},
		{"garbled content type", "POST", wrapPath, `{}`, []string{"Content-Type", "application/json; ;="}, 415, "UNSUPPORTED_MEDIA_TYPE_ERR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			st, body, _ := e.raw(tc.method, tc.path, manager, tc.body, tc.hdr...)
			if st != tc.status {
				t.Fatalf("status %d, want %d: %s", st, tc.status, body)
			}
			if tc.code == "" {
				return
			}
			var eb kpErrorBody
			if err := json.Unmarshal([]byte(body), &eb); err != nil || len(eb.Resources) != 1 || len(eb.Resources[0].Reasons) != 1 {
				t.Fatalf("not a Key Protect error body: %s", body)
			}
			r := eb.Resources[0]
			if eb.Metadata.CollectionType != "application/vnd.ibm.kms.error+json" || r.Reasons[0].Code != tc.code || r.Reasons[0].Status != tc.status ||
				!strings.HasSuffix(r.ErrorMsg, "("+tc.code+")") {
				t.Fatalf("error body = %s", body)
			}
		})
	}
	// The error message follows Key Protect's pattern word for word.
	if _, body, _ := e.raw("DELETE", "keys/"+protected.ID, manager, ""); !strings.Contains(body,
		`"errorMsg":"Conflict: Key could not be deleted: Please see 'reasons' for more details (PROTECTED_RESOURCE_ERR)"`) {
		t.Fatalf("error body = %s", body)
	}
	if _, body, _ := e.raw("POST", "keys/"+key.ID+"/actions/unwrap", manager, `{"ciphertext":"aGVsbG8gd29ybGQ="}`); !strings.Contains(body,
		`"errorMsg":"Unprocessable Entity: Key could not be unwrapped: Please see 'reasons' for more details (UNPROCESSABLE_CIPHERTEXT_ERR)"`) {
		t.Fatalf("error body = %s", body)
	}
	// The two keys above and the one created as application/json.
	st, body, hdr := e.raw("HEAD", "keys", reader, "")
	if st != 200 || hdr.Get("Key-Total") != "3" || body != "" {
		t.Fatalf("HEAD /keys = %d %q Key-Total=%q", st, body, hdr.Get("Key-Total"))
	}
	st, body, _ = e.raw("DELETE", "keys/"+key.ID, manager, "", "Prefer", "return=representation")
	if st != 200 || !bytes.Contains([]byte(body), []byte(`"state":5`)) {
		t.Fatalf("DELETE with representation = %d %s", st, body)
	}
}

// Key Protect takes key bodies only as JSON: a key sent as text/plain is
// refused and nothing is created, while its own media type, plain
// application/json and no Content-Type at all (IBM's Go client sends none)
// are taken.
func TestCreateKeyRefusesNonJSONContentType(t *testing.T) {
	e := newEnv(t)
	body := `{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"%s"}]}`
	for _, tc := range []struct {
		name, contentType string
		status            int
	}{
		{"text", "text/plain", 415},
		{"text with charset", "text/plain; charset=utf-8", 415},
		{"xml", "application/xml", 415},
		{"key protect's type", "application/vnd.ibm.kms.key+json", 201},
		{"json", "application/json", 201},
		{"none", "", 201},
	} {
		t.Run(tc.name, func(t *testing.T) {
			name := "ct-" + strings.NewReplacer(" ", "-", "'", "").Replace(tc.name)
			var hdr []string
			if tc.contentType != "" {
				hdr = []string{"Content-Type", tc.contentType}
			}
			st, resp, _ := e.raw("POST", "keys", manager, fmt.Sprintf(body, name), hdr...)
			if st != tc.status {
				t.Fatalf("status %d, want %d: %s", st, tc.status, resp)
			}
			keys := must[*kp.Keys](t)(e.client(manager).GetKeys(e.ctx, 0, 0))
			created := slices.ContainsFunc(keys.Keys, func(k kp.Key) bool { return k.Name == name })
			if created != (tc.status == 201) {
				t.Fatalf("key %s created: %v after status %d", name, created, st)
			}
			if st != 415 {
				return
			}
			want := `"errorMsg":"Unsupported Media Type: Key could not be created: Please see 'reasons' for more details (UNSUPPORTED_MEDIA_TYPE_ERR)"`
			if !strings.Contains(resp, want) || !strings.Contains(resp, `"collectionType":"application/vnd.ibm.kms.error+json"`) {
				t.Fatalf("error body = %s", resp)
			}
		})
	}
}

func TestEveryCallIsAudited(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "audited", nil))
	w := must[[]byte](t)(c.Wrap(e.ctx, key.ID, b64([]byte("0123456789abcdef")), nil))
	must[[]byte](t)(c.Unwrap(e.ctx, key.ID, w, nil))
	_, err := e.client(reader).Wrap(e.ctx, key.ID, b64([]byte("0123456789abcdef")), nil)
	wantErr(t, err, 403, "")
	_, err = e.client("bogus").GetKeys(e.ctx, 0, 0)
	wantErr(t, err, 401, "")
	if st, body, _ := e.raw("POST", "keys/"+key.ID+"/actions/wrap", manager, `{"plaintext":"***"}`); st != 400 {
		t.Fatalf("bad wrap = %d %s", st, body)
	}
	ok(t, c.Rotate(e.ctx, key.ID, ""))
	_, err = c.DeleteKey(e.ctx, key.ID, kp.ReturnMinimal)
	ok(t, err)
	want := []struct {
		action, outcome string
		code            int
		initiator       string
	}{
		{"kms.secrets.create", "success", 200, "IBMid-manager"},
		{"kms.secrets.wrap", "success", 200, "IBMid-manager"},
		{"kms.secrets.unwrap", "success", 200, "IBMid-manager"},
		{"kms.secrets.wrap", "failure", 403, "IBMid-reader"},
		{"kms.secrets.list", "failure", 401, "anonymous"},
		{"kms.secrets.wrap", "failure", 400, "IBMid-manager"},
		{"kms.secrets.rotate", "success", 200, "IBMid-manager"},
		{"kms.secrets.delete", "success", 200, "IBMid-manager"},
	}
	evs := must[[]kmsEvent](t)(auditEvents(e))
	if len(evs) != len(want) {
		t.Fatalf("%d events, want %d: %+v", len(evs), len(want), evs)
	}
	for i, w := range want {
		ev := evs[i]
		if ev.Action != w.action || ev.Outcome != w.outcome || ev.ReasonCode != w.code || ev.Initiator != w.initiator || ev.CorrelationID == "" {
			t.Fatalf("event %d = %+v, want %+v", i, ev, w)
		}
	}
	if evs[0].Target != key.CRN || evs[6].ResponseData["keyVersionId"] == nil {
		t.Fatalf("events lack the key: %+v", evs[6])
	}
	for _, ev := range evs {
		if strings.Contains(ev.Action, "wrap") && ev.ResponseData["plaintext"] != nil {
			t.Fatal("an event carries plaintext")
		}
	}
}

// TestCryptoEventsNameTheirKeyAndVersions: a wrap's event names the
// instance, key ring, key and version, and the request; an unwrap of a DEK
// sealed before a rotation names the version that sealed it and the one
// that rewrapped it (the identifiers are prepared once per cached key, the
// events' maps reused).
func TestCryptoEventsNameTheirKeyAndVersions(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "named", nil))
	old := must[[]byte](t)(c.Wrap(e.ctx, key.ID, b64([]byte("0123456789abcdef")), nil))
	ok(t, c.Rotate(e.ctx, key.ID, ""))
	must[[]byte](t)(c.Unwrap(e.ctx, key.ID, old, nil))
	evs := must[[]kmsEvent](t)(auditEvents(e))
	if len(evs) != 4 || evs[1].Action != "kms.secrets.wrap" || evs[3].Action != "kms.secrets.unwrap" {
		t.Fatalf("events %+v", evs)
	}
	wrap, unwrap := evs[1], evs[3]
	for _, ev := range []kmsEvent{wrap, unwrap} {
		rq := ev.RequestData
		if rq["instanceID"] != instance || rq["keyRingId"] != "default" || rq["method"] != "POST" ||
			rq["requestURI"] != "/api/v2/keys/"+key.ID+"/actions/"+strings.TrimPrefix(ev.Action, "kms.secrets.") || ev.ResponseData["keyId"] != key.ID {
			t.Fatalf("%s event: request %v, response %v", ev.Action, rq, ev.ResponseData)
		}
	}
	first, _ := wrap.ResponseData["keyVersionId"].(string)
	if first == "" || wrap.ResponseData["rewrappedKeyVersionId"] != nil {
		t.Fatalf("wrap event: %v", wrap.ResponseData)
	}
	latest, _ := unwrap.ResponseData["rewrappedKeyVersionId"].(string)
	if unwrap.ResponseData["keyVersionId"] != first || latest == "" || latest == first {
		t.Fatalf("unwrap event after a rotation: %v (wrapped with %s)", unwrap.ResponseData, first)
	}
	// The events' maps are reused: the next wrap's carries nothing of the
	// rewrapping unwrap's.
	must[[]byte](t)(c.Wrap(e.ctx, key.ID, b64([]byte("0123456789abcdef")), nil))
	evs = must[[]kmsEvent](t)(auditEvents(e))
	next := evs[len(evs)-1]
	if next.Action != "kms.secrets.wrap" || len(next.ResponseData) != 2 || next.ResponseData["keyVersionId"] != latest || len(next.RequestData) != 4 {
		t.Fatalf("wrap event after a rewrapping unwrap: request %v, response %v", next.RequestData, next.ResponseData)
	}
}
