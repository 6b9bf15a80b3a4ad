package kpapi_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	kp "github.com/IBM/keyprotect-go-client"
	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/kms/kmstest"
	"github.com/keyline/keyline/internal/kms/kpapi"
	"github.com/keyline/keyline/internal/seal"
)

// sameAccount is a second instance of the test account, without a policy.
const sameAccount = "5d2e9c1a-1111-4000-8000-00000000cafe"

// allowedIPPolicy is the body of PUT instance/policies?policy=allowedIP.
func allowedIPPolicy(enabled bool, cidrs ...string) string {
	data := map[string]any{"enabled": enabled}
	if len(cidrs) > 0 {
		data["attributes"] = map[string]any{"allowed_ip": cidrs}
	}
	b, _ := json.Marshal(map[string]any{
		"metadata":  map[string]any{"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
		"resources": []any{map[string]any{"policy_type": "allowedIP", "policy_data": data}},
	})
	return string(b)
}

// wantIPRefusal fails unless a raw response is Key Protect's 401 for a
// client outside the allowedIP policy.
func wantIPRefusal(t *testing.T, what string, status int, body string) {
	t.Helper()
	var eb kpErrorBody
	if err := json.Unmarshal([]byte(body), &eb); err != nil {
		t.Fatalf("%s: %d %s: %v", what, status, body, err)
	}
	if status != 401 || eb.Metadata.CollectionType != "application/vnd.ibm.kms.error+json" || len(eb.Resources) != 1 ||
		eb.Resources[0].ErrorMsg != "Unauthorized: The user does not have access to the specified resource" ||
		len(eb.Resources[0].Reasons) != 1 || eb.Resources[0].Reasons[0].Code != "UNAUTHORIZED_ERR" ||
		eb.Resources[0].Reasons[0].Status != 401 || !strings.Contains(eb.Resources[0].Reasons[0].Message, "allowedIP") {
		t.Fatalf("%s: want the allowedIP 401, got %d %s", what, status, body)
	}
}

func TestAllowedIPPolicyRefusesClientsOutsideIt(t *testing.T) {
	e := newEnv(t)
	ok(t, e.svc.CreateInstance(e.ctx, kms.Instance{GUID: sameAccount, AccountID: account}))
	e.authz.Allow("IBMid-manager", kmstest.Grant{Role: auth.RoleManager, Instance: sameAccount})
	c := e.client(manager)
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "before-policy", nil))
	aad := []string{"dep-1"}
	wrapped := must[[]byte](t)(c.Wrap(e.ctx, key.ID, b64(bytes.Repeat([]byte{1}, 32)), &aad))
	wrapBody := `{"plaintext":"` + string(b64(bytes.Repeat([]byte{2}, 32))) + `"}`
	unwrapBody := `{"ciphertext":"` + string(wrapped) + `","aad":["dep-1"]}`

	// The test server listens on 127.0.0.1: a policy of 10.0.0.0/8 shuts it out.
	st, body, _ := e.raw("PUT", "instance/policies?policy=allowedIP", manager, allowedIPPolicy(true, "10.0.0.0/8"))
	if st != 204 {
		t.Fatalf("set policy = %d %s", st, body)
	}
	refused := []struct{ name, method, path, body string }{
		{"create key", "POST", "keys", `{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"type":"application/vnd.ibm.kms.key+json","name":"refused","extractable":false}]}`},
		{"list keys", "GET", "keys", ""},
		{"get key", "GET", "keys/" + key.ID, ""},
		{"wrap", "POST", "keys/" + key.ID + "/actions/wrap", wrapBody},
		{"wrap (query form)", "POST", "keys/" + key.ID + "?action=wrap", wrapBody},
		{"unwrap", "POST", "keys/" + key.ID + "/actions/unwrap", unwrapBody},
		{"wrap with a malformed body", "POST", "keys/" + key.ID + "/actions/wrap", `{"plaintext":`},
		{"get instance policies", "GET", "instance/policies", ""},
		{"get allowedIP policy", "GET", "instance/policies?policy=allowedIP", ""},
		{"widen the policy", "PUT", "instance/policies?policy=allowedIP", allowedIPPolicy(true, "0.0.0.0/0")},
		// Key Protect documents no exemption for disabling the policy.
		{"disable the policy", "PUT", "instance/policies?policy=allowedIP", allowedIPPolicy(false)},
		{"key rings", "GET", "key_rings", ""},
		{"import token", "POST", "import_token", `{"expiration":600,"maxAllowedRetrievals":1}`},
	}
	for _, r := range refused {
		st, body, _ := e.raw(r.method, r.path, manager, r.body)
		wantIPRefusal(t, r.name, st, body)
	}

	// The official client surfaces the refusal as a Key Protect error.
	_, err := c.CreateRootKey(e.ctx, "after-policy", nil)
	wantErr(t, err, 401, "UNAUTHORIZED_ERR")
	var kpErr *kp.Error
	if !errors.As(err, &kpErr) || !strings.Contains(kpErr.Reasons[0].Message, "allowedIP") {
		t.Fatalf("client error = %#v", err)
	}
	_, err = c.GetKeys(e.ctx, 0, 0)
	wantErr(t, err, 401, "UNAUTHORIZED_ERR")
	_, err = c.Wrap(e.ctx, key.ID, b64(bytes.Repeat([]byte{3}, 32)), &aad)
	wantErr(t, err, 401, "UNAUTHORIZED_ERR")
	_, err = c.Unwrap(e.ctx, key.ID, wrapped, &aad)
	wantErr(t, err, 401, "UNAUTHORIZED_ERR")
	_, err = c.GetAllowedIPInstancePolicy(e.ctx)
	wantErr(t, err, 401, "UNAUTHORIZED_ERR")
	wantErr(t, c.SetAllowedIPInstancePolicy(e.ctx, false, nil), 401, "UNAUTHORIZED_ERR")

	// Documented exemption: the private port is readable from anywhere.
	if port := must[int](t)(c.GetAllowedIPPrivateNetworkPort(e.ctx)); port == 0 {
		t.Fatal("allowed_ip_port refused or empty under the policy")
	}

	// Another instance of the same account, without the policy, is unaffected.
	sc, err := kp.New(kp.ClientConfig{BaseURL: e.srv.URL, Authorization: "Bearer " + manager, InstanceID: sameAccount}, kp.DefaultTransport())
	ok(t, err)
	must[*kp.Key](t)(sc.CreateRootKey(e.ctx, "unaffected", nil))

	// In-process service-to-service calls (a deployment unwrapping its DEK)
	// carry no client address and bypass the policy, as in Key Protect.
	raw, err := base64.StdEncoding.DecodeString(string(wrapped))
	ok(t, err)
	if _, err := e.svc.Unwrap(asService(), instance, key.ID, raw, aad); err != nil {
		t.Fatalf("in-process service unwrap refused: %v", err)
	}

	// A refusal leaves a failure event in the Activity Tracker.
	events, err := auditEvents(e)
	ok(t, err)
	found := false
	for _, ev := range events {
		if ev.Action == auth.KMSKeyWrap && ev.Outcome == "failure" && ev.ReasonCode == 401 && ev.Initiator == "IBMid-manager" {
			found = true
		}
	}
	if !found {
		t.Fatalf("no failed kms.secrets.wrap event with 401 among %d events", len(events))
	}
	page, err := e.audit.Query(e.ctx, audit.Filter{AccountID: account, Action: auth.KMSKeyUnwrap, Outcome: "failure"})
	ok(t, err)
	if len(page.Events) == 0 || !strings.Contains(page.Events[0].Reason.ReasonForFailure, "allowedIP") ||
		page.Events[0].Initiator.Host.Address != "127.0.0.1" {
		t.Fatalf("the refusal and its reason are not in the audit trail: %+v", page.Events)
	}

	// The way back in for a locked-out instance is an in-process call (an
	// operator); the policy then lets 127.0.0.1 in over HTTP again.
	off := false
	ok(t, e.svc.SetInstancePolicies(asUser("IBMid-manager"), instance, kms.InstancePolicyAllowedIP,
		[]kms.InstancePolicy{{PolicyType: kms.InstancePolicyAllowedIP, PolicyData: kms.InstancePolicyData{Enabled: &off}}}))
	must[*kp.Key](t)(c.CreateRootKey(e.ctx, "after-disable", nil))
	must[[]byte](t)(c.Unwrap(e.ctx, key.ID, wrapped, &aad))
}

func TestAllowedIPPolicyLetsClientsInsideIt(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "inside", nil))
	ok(t, c.SetAllowedIPInstancePolicy(e.ctx, true, []string{"192.0.2.0/24", "127.0.0.0/8"}))
	aad := []string{"dep-1"}
	wrapped := must[[]byte](t)(c.Wrap(e.ctx, key.ID, b64(bytes.Repeat([]byte{4}, 32)), &aad))
	must[[]byte](t)(c.Unwrap(e.ctx, key.ID, wrapped, &aad))
	must[*kp.Key](t)(c.CreateRootKey(e.ctx, "inside-2", nil))
	must[*kp.Keys](t)(c.GetKeys(e.ctx, 0, 0))
	if p := must[*kp.InstancePolicy](t)(c.GetAllowedIPInstancePolicy(e.ctx)); p == nil || !*p.PolicyData.Enabled {
		t.Fatalf("policy = %+v", p)
	}
	// Narrowing the policy to exclude the caller takes effect at once...
	ok(t, c.SetAllowedIPInstancePolicy(e.ctx, true, []string{"192.0.2.0/24"}))
	_, err := c.Wrap(e.ctx, key.ID, b64(bytes.Repeat([]byte{4}, 32)), &aad)
	wantErr(t, err, 401, "UNAUTHORIZED_ERR")

	// ...and survives a restart: the index is rebuilt from the database.
	master2, _ := seal.New(seal.RandomKey())
	restarted, err := kms.New(e.ctx, kms.Config{DB: e.db, Master: master2, Clock: e.clock, Authorizer: e.authz, Audit: kms.ActivityTracker(e.audit)})
	ok(t, err)
	_, err = restarted.GetInstancePolicies(kms.WithClientAddr(asUser("IBMid-manager"), "127.0.0.1:5000"), instance, "")
	if e := errs.As(err); e == nil || e.Kind != errs.Unauthenticated || !strings.Contains(e.Msg, "allowedIP") {
		t.Fatalf("after restart, a call from outside the policy = %v", err)
	}
	if _, err := restarted.GetInstancePolicies(kms.WithClientAddr(asUser("IBMid-manager"), "192.0.2.9:5000"), instance, ""); err != nil {
		t.Fatalf("after restart, a call from inside the policy = %v", err)
	}
}

func TestAllowedIPPolicyOverIPv6Loopback(t *testing.T) {
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	e := newEnv(t)
	authn := kmstest.NewAuthn()
	authn.Add(manager, &auth.Principal{IAMID: "IBMid-manager", AccountID: account, Name: "IBMid-manager", Type: auth.User, CredentialType: "token"})
	mux := http.NewServeMux()
	kpapi.New(e.svc, authn, nil).Register(mux)
	srv := &httptest.Server{Listener: ln, Config: &http.Server{Handler: httpapi.Middleware(nil, mux)}}
	srv.Start()
	t.Cleanup(srv.Close)
	c, err := kp.New(kp.ClientConfig{BaseURL: srv.URL, Authorization: "Bearer " + manager, InstanceID: instance}, kp.DefaultTransport())
	ok(t, err)

	ok(t, c.SetAllowedIPInstancePolicy(e.ctx, true, []string{"::1/128"}))
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "v6", nil))
	aad := []string{"a"}
	must[[]byte](t)(c.Wrap(e.ctx, key.ID, b64(bytes.Repeat([]byte{5}, 32)), &aad))

	// 127.0.0.0/8 does not cover ::1: IPv4 and IPv6 are different clients.
	ok(t, c.SetAllowedIPInstancePolicy(e.ctx, true, []string{"127.0.0.0/8"}))
	_, err = c.GetKeys(e.ctx, 0, 0)
	wantErr(t, err, 401, "UNAUTHORIZED_ERR")
}
