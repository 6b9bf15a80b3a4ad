package iamapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/iam/iamapi"
	"github.com/keyline/keyline/internal/iam/iamtest"
)

type server struct {
	*iamtest.Env
	srv *httptest.Server
}

func newServer(t *testing.T) *server {
	e := iamtest.New(t)
	mux := http.NewServeMux()
	iamapi.New(e.Service, nil).Register(mux)
	srv := httptest.NewServer(httpapi.Middleware(nil, mux))
	t.Cleanup(srv.Close)
	return &server{Env: e, srv: srv}
}

// response is a decoded reply.
type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (s *server) do(t *testing.T, method, path, token string, body any, header ...string) response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, s.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			t.Fatalf("%s %s: body is not a JSON object: %s", method, path, raw)
		}
	}
	return out
}

func (s *server) token(t *testing.T, apikey string) string {
	t.Helper()
	r := s.exchange(t, "/identity/token", url.Values{"grant_type": {iam.GrantAPIKey}, "apikey": {apikey}})
	if r.status != 200 {
		t.Fatalf("token exchange: %d %s", r.status, r.raw)
	}
	return r.body["access_token"].(string)
}

func (s *server) exchange(t *testing.T, path string, form url.Values) response {
	t.Helper()
	return s.do(t, "POST", path, "", form.Encode(), "Content-Type", "application/x-www-form-urlencoded", "Accept", "application/json")
}

// wantIdentityError checks IAM Identity's error body.
func wantIdentityError(t *testing.T, r response, status int, code string) {
	t.Helper()
	if r.status != status || r.body["errorCode"] != code || r.body["errorMessage"] == "" {
		t.Fatalf("want %d %s, got %d %s", status, code, r.status, r.raw)
	}
	if ctx, _ := r.body["context"].(map[string]any); ctx == nil || ctx["requestId"] != r.header.Get("Correlation-Id") {
		t.Fatalf("context.requestId is not the correlation id: %s", r.raw)
	}
}

// wantPolicyError checks the policy management API's error body.
func wantPolicyError(t *testing.T, r response, status int, code string) {
	t.Helper()
	errsList, _ := r.body["errors"].([]any)
	if r.status != status || len(errsList) != 1 || r.body["status_code"] != float64(status) || r.body["trace"] != r.header.Get("Correlation-Id") {
		t.Fatalf("want %d, got %d %s", status, r.status, r.raw)
	}
	first := errsList[0].(map[string]any)
	if first["code"] != code || first["message"] == "" {
		t.Fatalf("want code %s, got %s", code, r.raw)
	}
}

func TestTokenRoundTrip(t *testing.T) {
	s := newServer(t)
	for _, path := range []string{"/identity/token", "/oidc/token"} {
		r := s.exchange(t, path, url.Values{"grant_type": {iam.GrantAPIKey}, "apikey": {s.AdminKey}})
		if r.status != 200 || r.body["token_type"] != "Bearer" || r.body["expires_in"] != float64(3600) ||
			r.body["expiration"] != float64(s.Clock.Now().Add(time.Hour).Unix()) || r.body["refresh_token"] == "" {
			t.Fatalf("%s: %d %s", path, r.status, r.raw)
		}
		// The token verifies with the published JWKS alone.
		claims := jwt.MapClaims{}
		keys := s.do(t, "GET", "/identity/keys", "", nil)
		_, err := jwt.NewParser(jwt.WithTimeFunc(s.Clock.Now)).ParseWithClaims(r.body["access_token"].(string), claims, func(tok *jwt.Token) (any, error) {
			if tok.Method.Alg() != "RS256" {
				t.Errorf("alg %s", tok.Method.Alg())
			}
			return jwkKey(t, keys.body, tok.Header["kid"].(string)), nil
		})
		if err != nil {
			t.Fatalf("%s: token does not verify with JWKS: %v", path, err)
		}
		if claims["iam_id"] != s.Admin.IAMID || claims["account"].(map[string]any)["bss"] != s.Account.ID || claims["jti"] == "" || claims["sub"] == "" {
			t.Errorf("claims %v", claims)
		}
		details := s.do(t, "GET", "/v1/apikeys/details", r.body["access_token"].(string), nil, "IAM-ApiKey", s.AdminKey)
		if details.status != 200 || details.body["account_id"] != s.Account.ID || details.body["iam_id"] != s.Admin.IAMID || details.body["apikey"] != nil {
			t.Fatalf("details: %d %s", details.status, details.raw)
		}
	}
	// A refresh token gets a new access token but is never a bearer token.
	r := s.exchange(t, "/identity/token", url.Values{"grant_type": {iam.GrantAPIKey}, "apikey": {s.AdminKey}})
	refresh := r.body["refresh_token"].(string)
	if got := s.do(t, "GET", "/v1/apikeys", refresh, nil); got.status != 401 {
		t.Errorf("refresh token as bearer: %d", got.status)
	}
	if got := s.exchange(t, "/identity/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refresh}}); got.status != 200 {
		t.Errorf("refresh grant: %d %s", got.status, got.raw)
	}
}

func jwkKey(t *testing.T, jwks map[string]any, kid string) *rsa.PublicKey {
	for _, k := range jwks["keys"].([]any) {
		k := k.(map[string]any)
		if k["kid"] != kid {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(k["n"].(string))
		e, err2 := base64.RawURLEncoding.DecodeString(k["e"].(string))
		if err1 != nil || err2 != nil {
			t.Fatalf("bad JWK %v", k)
		}
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	t.Fatalf("kid %s not in JWKS", kid)
	return nil
}

func TestExpiredTokenRefused(t *testing.T) {
	s := newServer(t)
	tok := s.token(t, s.AdminKey)
	if r := s.do(t, "GET", "/v1/apikeys", tok, nil); r.status != 200 {
		t.Fatalf("fresh token: %d %s", r.status, r.raw)
	}
	s.Clock.Advance(time.Hour + time.Second)
	r := s.do(t, "GET", "/v1/apikeys", tok, nil)
	wantIdentityError(t, r, 401, "BXNIM0407E")
	if r := s.do(t, "GET", "/v1/policies?account_id="+s.Account.ID, tok, nil); r.status != 401 {
		t.Fatalf("expired token on policies: %d", r.status)
	}
}

func TestForgedTokensRefused(t *testing.T) {
	s := newServer(t)
	good := s.token(t, s.AdminKey)
	parts := strings.Split(good, ".")
	claims := jwt.MapClaims{}
	if _, _, err := jwt.NewParser().ParseUnverified(good, claims); err != nil {
		t.Fatal(err)
	}
	kid := strings.Split(good, ".")[0]
	header, _ := base64.RawURLEncoding.DecodeString(kid)
	var hdr map[string]any
	json.Unmarshal(header, &hdr)

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	wrongKey := jwt.NewWithClaims(jwt.SigningMethodRS256, claims)
	wrongKey.Header["kid"] = hdr["kid"]
	wrongSigned, _ := wrongKey.SignedString(other)

	none := jwt.NewWithClaims(jwt.SigningMethodNone, claims)
	none.Header["kid"] = hdr["kid"]
	noneSigned, _ := none.SignedString(jwt.UnsafeAllowNoneSignatureType)

	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	hs.Header["kid"] = hdr["kid"]
	hsSigned, _ := hs.SignedString([]byte("guessed secret"))

	tampered := claims
	tampered["iam_id"] = "IBMid-SOMEONEELSE"
	payload, _ := json.Marshal(tampered)
	tamperedToken := parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]

	tests := map[string]string{
		"garbled":         "not.a.token",
		"random":          "eyJhbGciOiJSUzI1NiJ9.e30.AAAA",
		"truncated":       good[:len(good)-10],
		"wrong signature": wrongSigned,
		"alg none":        noneSigned,
		"HS256":           hsSigned,
		"tampered claims": tamperedToken,
		"huge":            strings.Repeat("a", 20000),
	}
	for name, tok := range tests {
		t.Run(name, func(t *testing.T) {
			r := s.do(t, "GET", "/v1/apikeys", tok, nil)
			if r.status != 401 || r.body["errorCode"] != "BXNIM0407E" {
				t.Fatalf("got %d %s", r.status, r.raw)
			}
		})
	}
	if r := s.do(t, "GET", "/v1/apikeys", "", nil); r.status != 401 {
		t.Fatalf("no token: %d", r.status)
	}
}

func TestDeletingAPIKeyRevokesItsTokens(t *testing.T) {
	s := newServer(t)
	admin := s.token(t, s.AdminKey)
	inv := s.do(t, "POST", "/v2/accounts/"+s.Account.ID+"/users", admin, map[string]any{"users": []map[string]string{{"email": "dev@example.com"}}})
	if inv.status != 202 {
		t.Fatalf("invite: %d %s", inv.status, inv.raw)
	}
	userIAMID := inv.body["resources"].([]any)[0].(map[string]any)["iam_id"].(string)
	if !strings.HasPrefix(userIAMID, "IBMid-") {
		t.Fatalf("user iam_id %q", userIAMID)
	}
	created := s.do(t, "POST", "/v1/apikeys", admin, map[string]any{"name": "dev key", "iam_id": userIAMID})
	if created.status != 201 || created.body["apikey"] == "" || created.body["iam_id"] != userIAMID {
		t.Fatalf("create key: %d %s", created.status, created.raw)
	}
	keyID, value := created.body["id"].(string), created.body["apikey"].(string)
	if got := s.do(t, "GET", "/v1/apikeys/"+keyID, admin, nil); got.status != 200 || got.body["apikey"] != nil {
		t.Fatalf("get key shows %d %s", got.status, got.raw)
	}
	user := s.token(t, value)
	if r := s.do(t, "GET", "/v1/apikeys", user, nil); r.status != 200 || len(r.body["apikeys"].([]any)) != 1 {
		t.Fatalf("user lists own keys: %d %s", r.status, r.raw)
	}
	if r := s.do(t, "DELETE", "/v1/apikeys/"+keyID, admin, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	wantIdentityError(t, s.do(t, "GET", "/v1/apikeys", user, nil), 401, "BXNIM0407E")
	wantIdentityError(t, s.exchange(t, "/identity/token", url.Values{"grant_type": {iam.GrantAPIKey}, "apikey": {value}}), 400, "BXNIM0415E")
	if _, err := s.Service.AuthenticateAPIKey(context.Background(), value); !errs.Is(errs.Unauthenticated, err) {
		t.Fatalf("SASL with a deleted key: %v", err)
	}
}

func TestUserWithoutPolicyCannotManageOthers(t *testing.T) {
	s := newServer(t)
	u, key := s.NewUser(t, "plain@example.com")
	user := s.token(t, key)
	wantIdentityError(t, s.do(t, "POST", "/v1/apikeys", user, map[string]any{"name": "x", "iam_id": s.Admin.IAMID}), 403, "access_denied")
	wantIdentityError(t, s.do(t, "POST", "/v1/serviceids", user, map[string]any{"name": "x", "account_id": s.Account.ID}), 403, "access_denied")
	wantIdentityError(t, s.do(t, "GET", "/v2/accounts/"+s.Account.ID+"/users", user, nil), 403, "access_denied")
	policy := map[string]any{"type": "access",
		"subjects":  []any{map[string]any{"attributes": []any{map[string]any{"name": "iam_id", "value": u.IAMID}}}},
		"roles":     []any{map[string]any{"role_id": auth.RoleManager}},
		"resources": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": s.Account.ID}}}}}
	wantPolicyError(t, s.do(t, "POST", "/v1/policies", user, policy), 403, "access_denied")
	// But a user may manage their own API keys.
	if r := s.do(t, "POST", "/v1/apikeys", user, map[string]any{"name": "mine", "iam_id": u.IAMID}); r.status != 201 {
		t.Fatalf("own key: %d %s", r.status, r.raw)
	}
}

func TestServiceIDWithAPIKey(t *testing.T) {
	s := newServer(t)
	admin := s.token(t, s.AdminKey)
	sid := s.do(t, "POST", "/v1/serviceids", admin, map[string]any{"name": "app", "account_id": s.Account.ID})
	if sid.status != 201 || !strings.HasPrefix(sid.body["iam_id"].(string), "iam-ServiceId-") {
		t.Fatalf("create service ID: %d %s", sid.status, sid.raw)
	}
	id, iamID := sid.body["id"].(string), sid.body["iam_id"].(string)
	key := s.do(t, "POST", "/v1/apikeys", admin, map[string]any{"name": "app key", "iam_id": iamID})
	if key.status != 201 {
		t.Fatalf("key: %d %s", key.status, key.raw)
	}
	tok := s.token(t, key.body["apikey"].(string))
	p, err := s.Service.AuthenticateToken(context.Background(), tok)
	if err != nil || p.Type != auth.ServiceID || p.IAMID != iamID || p.AccountID != s.Account.ID {
		t.Fatalf("service ID principal %+v %v", p, err)
	}
	if r := s.do(t, "GET", "/v1/serviceids?account_id="+s.Account.ID, admin, nil); r.status != 200 || len(r.body["serviceids"].([]any)) != 1 {
		t.Fatalf("list: %d %s", r.status, r.raw)
	}
	if r := s.do(t, "PUT", "/v1/serviceids/"+id, admin, map[string]any{"name": "renamed"}, "If-Match", "7"); r.status != 409 {
		t.Fatalf("stale If-Match: %d %s", r.status, r.raw)
	}
	if r := s.do(t, "PUT", "/v1/serviceids/"+id, admin, map[string]any{"name": "renamed"}, "If-Match", "1"); r.status != 200 || r.body["name"] != "renamed" || r.body["entity_tag"] != "2" {
		t.Fatalf("update: %d %s", r.status, r.raw)
	}
	if r := s.do(t, "DELETE", "/v1/serviceids/"+id, admin, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	if _, err := s.Service.AuthenticateToken(context.Background(), tok); err == nil {
		t.Fatal("a deleted service ID's token still authenticates")
	}
}

func TestReaderOnOneInstanceOverHTTP(t *testing.T) {
	s := newServer(t)
	admin := s.token(t, s.AdminKey)
	u, key := s.NewUser(t, "reader@example.com")
	body := map[string]any{"type": "access",
		"subjects": []any{map[string]any{"attributes": []any{map[string]any{"name": "iam_id", "value": u.IAMID}}}},
		"roles":    []any{map[string]any{"role_id": auth.RoleReader}},
		"resources": []any{map[string]any{"attributes": []any{
			map[string]any{"name": "accountId", "value": s.Account.ID},
			map[string]any{"name": "serviceName", "value": "kms"},
			map[string]any{"name": "serviceInstance", "value": "kp-x"}}}}}
	created := s.do(t, "POST", "/v1/policies", admin, body)
	if created.status != 201 || created.body["state"] != "active" || created.body["created_by_id"] != s.Admin.IAMID ||
		created.body["href"] != s.srv.URL+"/v1/policies/"+created.body["id"].(string) {
		t.Fatalf("create: %d %s", created.status, created.raw)
	}
	if roles := created.body["roles"].([]any); roles[0].(map[string]any)["display_name"] != "Reader" {
		t.Errorf("roles %v", roles)
	}
	p, err := s.Service.AuthenticateToken(context.Background(), s.token(t, key))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	x := auth.Resource{AccountID: s.Account.ID, ServiceName: "kms", ServiceInstance: "kp-x"}
	if err := s.Service.Authorize(ctx, p, auth.KMSKeyList, x); err != nil {
		t.Fatalf("list: %v", err)
	}
	for _, action := range []string{auth.KMSKeyCreate, auth.KMSKeyDelete, auth.KMSKeyWrap} {
		if err := s.Service.Authorize(ctx, p, action, x); !errs.Is(errs.Permission, err) {
			t.Errorf("%s: %v", action, err)
		}
	}
	// Revocation stops the very next call.
	if r := s.do(t, "DELETE", "/v1/policies/"+created.body["id"].(string), admin, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.raw)
	}
	if err := s.Service.Authorize(ctx, p, auth.KMSKeyList, x); !errs.Is(errs.Permission, err) {
		t.Fatalf("list after revocation: %v", err)
	}
	deleted := s.do(t, "GET", "/v1/policies?account_id="+s.Account.ID+"&state=deleted", admin, nil)
	if deleted.status != 200 || len(deleted.body["policies"].([]any)) != 1 {
		t.Fatalf("deleted list: %d %s", deleted.status, deleted.raw)
	}
}

func TestAuthorizationPoliciesOverHTTP(t *testing.T) {
	s := newServer(t)
	admin := s.token(t, s.AdminKey)
	body := map[string]any{"type": "authorization", "description": "ES to KP",
		"subjects": []any{map[string]any{"attributes": []any{
			map[string]any{"name": "accountId", "value": s.Account.ID},
			map[string]any{"name": "serviceName", "value": "messagehub"},
			map[string]any{"name": "serviceInstance", "value": "es-x"}}}},
		"roles": []any{map[string]any{"role_id": auth.RoleReader}, map[string]any{"role_id": auth.RoleAuthorizationDelegator}},
		"resources": []any{map[string]any{"attributes": []any{
			map[string]any{"name": "accountId", "operator": "stringEquals", "value": s.Account.ID},
			map[string]any{"name": "serviceName", "operator": "stringEquals", "value": "kms"},
			map[string]any{"name": "serviceInstance", "operator": "stringEquals", "value": "kp-y"}}}}}
	created := s.do(t, "POST", "/v1/policies", admin, body)
	if created.status != 201 {
		t.Fatalf("create: %d %s", created.status, created.raw)
	}
	id := created.body["id"].(string)
	wantPolicyError(t, s.do(t, "POST", "/v1/policies", admin, body), 409, "policy_conflict_error")

	es := &auth.Principal{IAMID: "crn-es", AccountID: s.Account.ID, Type: auth.Service, ServiceName: "messagehub",
		SourceInstance: "es-x", SourceCRN: "crn:v1:bluemix:public:messagehub:us-south:a/" + s.Account.ID + ":es-x::"}
	kpY := auth.Resource{AccountID: s.Account.ID, ServiceName: "kms", ServiceInstance: "kp-y"}
	if err := s.Service.Authorize(context.Background(), es, auth.KMSKeyWrap, kpY); err != nil {
		t.Fatalf("wrap: %v", err)
	}
	s.Clock.Advance(time.Second) // lists are oldest first
	dep, err := s.Service.CreateDependentAuthorization(context.Background(), es, "is", kpY, auth.RoleReader)
	if err != nil {
		t.Fatal(err)
	}
	newest := s.do(t, "GET", "/v1/policies?account_id="+s.Account.ID+"&type=authorization&sort=-created_at", admin, nil)
	if pols := newest.body["policies"].([]any); len(pols) != 2 || pols[0].(map[string]any)["id"] != dep.ID {
		t.Fatalf("newest first: %s", newest.raw)
	}
	wantPolicyError(t, s.do(t, "GET", "/v1/policies?account_id="+s.Account.ID+"&sort=colour", admin, nil), 400, "invalid_parameter")
	list := s.do(t, "GET", "/v1/policies?account_id="+s.Account.ID+"&type=authorization&limit=1", admin, nil)
	if list.status != 200 || list.body["limit"] != float64(1) || list.body["next"] == nil || len(list.body["policies"].([]any)) != 1 {
		t.Fatalf("list page 1: %d %s", list.status, list.raw)
	}
	next := list.body["next"].(map[string]any)
	u, _ := url.Parse(next["href"].(string))
	page2 := s.do(t, "GET", u.RequestURI(), admin, nil)
	pols := page2.body["policies"].([]any)
	if page2.status != 200 || len(pols) != 1 || pols[0].(map[string]any)["id"] != dep.ID ||
		pols[0].(map[string]any)["created_by_id"] != "crn-"+es.SourceCRN || page2.body["next"] != nil {
		t.Fatalf("list page 2: %d %s", page2.status, page2.raw)
	}

	// PUT needs the current ETag.
	get := s.do(t, "GET", "/v1/policies/"+id, admin, nil)
	etag := get.header.Get("ETag")
	body["description"] = "changed"
	wantPolicyError(t, s.do(t, "PUT", "/v1/policies/"+id, admin, body), 400, "missing_if_match")
	wantPolicyError(t, s.do(t, "PUT", "/v1/policies/"+id, admin, body, "If-Match", "99"), 412, "precondition_failed")
	upd := s.do(t, "PUT", "/v1/policies/"+id, admin, body, "If-Match", etag)
	if upd.status != 200 || upd.body["description"] != "changed" || upd.header.Get("ETag") == etag {
		t.Fatalf("update: %d %s", upd.status, upd.raw)
	}

	if r := s.do(t, "DELETE", "/v1/policies/"+id, admin, nil); r.status != 204 {
		t.Fatalf("delete: %d", r.status)
	}
	if err := s.Service.Authorize(context.Background(), es, auth.KMSKeyWrap, kpY); !errs.Is(errs.Permission, err) {
		t.Fatalf("wrap after the authorization was deleted: %v", err)
	}
	if got := s.do(t, "GET", "/v1/policies/"+id, admin, nil); got.status != 200 || got.body["state"] != "deleted" {
		t.Fatalf("deleted policy: %d %s", got.status, got.raw)
	}
	restored := s.do(t, "PATCH", "/v1/policies/"+id, admin, map[string]any{"state": "active"}, "If-Match", s.do(t, "GET", "/v1/policies/"+id, admin, nil).header.Get("ETag"))
	if restored.status != 200 || restored.body["state"] != "active" {
		t.Fatalf("restore: %d %s", restored.status, restored.raw)
	}
}

func TestBadInputGetsIAMErrorFormat(t *testing.T) {
	s := newServer(t)
	admin := s.token(t, s.AdminKey)
	good := func() map[string]any {
		return map[string]any{"type": "authorization",
			"subjects": []any{map[string]any{"attributes": []any{
				map[string]any{"name": "accountId", "value": s.Account.ID},
				map[string]any{"name": "serviceName", "value": "messagehub"}}}},
			"roles": []any{map[string]any{"role_id": auth.RoleReader}},
			"resources": []any{map[string]any{"attributes": []any{
				map[string]any{"name": "accountId", "value": s.Account.ID},
				map[string]any{"name": "serviceName", "value": "kms"}}}}}
	}
	badRole := good()
	badRole["roles"] = []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Overlord"}}
	writerAuth := good()
	writerAuth["roles"] = []any{map[string]any{"role_id": auth.RoleWriter}}
	noAccount := good()
	noAccount["resources"] = []any{map[string]any{"attributes": []any{map[string]any{"name": "serviceName", "value": "kms"}}}}
	unknownAttr := good()
	unknownAttr["subjects"] = []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": s.Account.ID},
		map[string]any{"name": "serviceName", "value": "messagehub"}, map[string]any{"name": "region", "value": "x"}}}}
	unknownField := good()
	unknownField["colour"] = "blue"
	wildcard := good()
	wildcard["resources"] = []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": "*"}, map[string]any{"name": "serviceName", "value": "kms"}}}}

	tests := []struct {
		name string
		body any
	}{
		{"malformed JSON", `{"type": "access",`},
		{"empty body", ""},
		{"unknown field", unknownField},
		{"bad role CRN", badRole},
		{"writer in an authorization", writerAuth},
		{"resource without accountId", noAccount},
		{"unsupported subject attribute", unknownAttr},
		{"wildcard value", wildcard},
		{"no type", map[string]any{"subjects": []any{}}},
		{"access for an unknown identity", map[string]any{"type": "access",
			"subjects":  []any{map[string]any{"attributes": []any{map[string]any{"name": "iam_id", "value": "IBMid-NOBODY"}}}},
			"roles":     []any{map[string]any{"role_id": auth.RoleReader}},
			"resources": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": s.Account.ID}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantPolicyError(t, s.do(t, "POST", "/v1/policies", admin, tt.body), 400, "invalid_body")
		})
	}
	wantPolicyError(t, s.do(t, "GET", "/v1/policies", admin, nil), 400, "invalid_parameter")
	wantPolicyError(t, s.do(t, "GET", "/v1/policies?account_id=x&limit=abc", admin, nil), 400, "invalid_parameter")
	wantPolicyError(t, s.do(t, "GET", "/v1/policies/nope", admin, nil), 404, "policy_not_found")

	wantIdentityError(t, s.do(t, "POST", "/v1/apikeys", admin, `{"name": `), 400, "BXNIM0109E")
	wantIdentityError(t, s.do(t, "POST", "/v1/apikeys", admin, map[string]any{"name": "x"}), 400, "BXNIM0109E")
	wantIdentityError(t, s.do(t, "POST", "/v1/apikeys", admin, map[string]any{"name": "x", "iam_id": s.Admin.IAMID, "extra": 1}), 400, "BXNIM0109E")
	wantIdentityError(t, s.do(t, "GET", "/v1/apikeys/ApiKey-nope", admin, nil), 404, "not_found")

	wantIdentityError(t, s.exchange(t, "/identity/token", url.Values{"apikey": {s.AdminKey}}), 400, "BXNIM0109E")
	wantIdentityError(t, s.exchange(t, "/identity/token", url.Values{"grant_type": {iam.GrantAPIKey}}), 400, "BXNIM0109E")
	wantIdentityError(t, s.exchange(t, "/identity/token", url.Values{"grant_type": {iam.GrantAPIKey}, "apikey": {"wrong"}}), 400, "BXNIM0415E")
	wantIdentityError(t, s.exchange(t, "/identity/token", url.Values{"grant_type": {"password"}}), 400, "unsupported_grant_type")
	wantIdentityError(t, s.exchange(t, "/identity/token", url.Values{"grant_type": {iam.GrantAPIKey, iam.GrantAPIKey}, "apikey": {s.AdminKey}}), 400, "BXNIM0109E")
	wantIdentityError(t, s.do(t, "POST", "/identity/token", "", `{"apikey":"x"}`, "Content-Type", "application/json"), 400, "BXNIM0109E")
}

func TestIAMCallsAreAuditedWithoutSecrets(t *testing.T) {
	s := newServer(t)
	admin := s.token(t, s.AdminKey)
	u, userKey := s.NewUser(t, "audited@example.com")
	user := s.token(t, userKey)
	created := s.do(t, "POST", "/v1/apikeys", admin, map[string]any{"name": "k", "iam_id": u.IAMID})
	s.do(t, "DELETE", "/v1/apikeys/"+created.body["id"].(string), admin, nil)
	s.do(t, "POST", "/v1/serviceids", admin, map[string]any{"name": "app", "account_id": s.Account.ID})
	s.do(t, "POST", "/v1/serviceids", user, map[string]any{"name": "denied", "account_id": s.Account.ID})
	pol := s.Grant(t, u.IAMID, auth.Resource{AccountID: s.Account.ID, ServiceName: "kms"}, auth.RoleReader)
	s.do(t, "DELETE", "/v1/policies/"+pol.ID, admin, nil)

	page, err := s.Audit.Query(context.Background(), audit.Filter{AccountID: s.Account.ID, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, ev := range page.Events {
		seen[ev.Action+"/"+ev.Outcome]++
		js, _ := json.Marshal(ev)
		for _, secret := range []string{s.AdminKey, userKey, created.body["apikey"].(string), admin, user} {
			if strings.Contains(string(js), secret) {
				t.Fatalf("event %s holds a secret: %s", ev.Action, js)
			}
		}
	}
	for _, want := range []string{"iam-identity.apikey.create/success", "iam-identity.apikey.delete/success",
		"iam-identity.serviceid.create/success", "iam-identity.serviceid.create/failure", "iam-am.policy.create/success",
		"iam-am.policy.delete/success", "user-management.user.create/success"} {
		if seen[want] == 0 {
			t.Errorf("no %s event; saw %v", want, seen)
		}
	}
}

func TestRoleCatalogue(t *testing.T) {
	s := newServer(t)
	admin := s.token(t, s.AdminKey)
	names := func(r response, kind string) []string {
		var out []string
		for _, role := range r.body[kind].([]any) {
			out = append(out, role.(map[string]any)["display_name"].(string))
		}
		return out
	}
	kms := s.do(t, "GET", "/v2/roles?service_name=kms", admin, nil)
	if got := strings.Join(names(kms, "service_roles"), ","); kms.status != 200 || got != "Reader,ReaderPlus,Writer,Manager,KeyPurge" {
		t.Fatalf("kms service roles %q (%d %s)", got, kms.status, kms.raw)
	}
	authz := s.do(t, "GET", "/v2/roles?service_name=kms&policy_type=authorization&source_service_name=messagehub", admin, nil)
	if got := strings.Join(append(names(authz, "service_roles"), names(authz, "system_roles")...), ","); got != "Reader,Authorization Delegator" {
		t.Fatalf("authorization roles %q", got)
	}
	wantPolicyError(t, s.do(t, "GET", "/v2/roles", admin, nil), 400, "invalid_parameter")
}

func TestRemovedUserLosesAccessAtOnce(t *testing.T) {
	s := newServer(t)
	admin := s.token(t, s.AdminKey)
	u, key := s.NewUser(t, "leaver@example.com")
	pol := s.Grant(t, u.IAMID, auth.Resource{AccountID: s.Account.ID, ServiceName: "kms"}, auth.RoleManager)
	user := s.token(t, key)
	if r := s.do(t, "GET", "/v1/apikeys", user, nil); r.status != 200 {
		t.Fatalf("before: %d", r.status)
	}
	path := "/v2/accounts/" + s.Account.ID + "/users/"
	wantIdentityError(t, s.do(t, "DELETE", path+s.Admin.IAMID, admin, nil), 409, "cannot_remove_self")
	if r := s.do(t, "DELETE", path+u.IAMID, admin, nil); r.status != 204 {
		t.Fatalf("remove: %d %s", r.status, r.raw)
	}
	wantIdentityError(t, s.do(t, "GET", "/v1/apikeys", user, nil), 401, "BXNIM0407E")
	wantIdentityError(t, s.exchange(t, "/identity/token", url.Values{"grant_type": {iam.GrantAPIKey}, "apikey": {key}}), 400, "BXNIM0415E")
	if got := s.do(t, "GET", "/v1/policies/"+pol.ID, admin, nil); got.body["state"] != "deleted" {
		t.Fatalf("the removed user's policy: %s", got.raw)
	}
	users := s.do(t, "GET", path[:len(path)-1], admin, nil)
	if users.status != 200 || len(users.body["resources"].([]any)) != 1 {
		t.Fatalf("users left: %s", users.raw)
	}
}
