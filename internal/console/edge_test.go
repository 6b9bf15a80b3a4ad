package console_test

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/console"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
)

// The tests in this file check the console's own edge (sign-in, sessions,
// CSRF, cookies, headers) against a small identity endpoint, so they run
// without the full server. The browser tests drive the real server.

// identityEdge is a token endpoint and one policy route with a two-user
// account: an administrator and a reader.
type identityEdge struct {
	mu     sync.Mutex
	keys   map[string]auth.Principal
	tokens map[string]auth.Principal
	posted int // policies created
}

const (
	edgeAdminKey  = "edge-admin-key-0123456789"
	edgeReaderKey = "edge-reader-key-0123456789"
)

func newIdentityEdge() *identityEdge {
	return &identityEdge{
		keys: map[string]auth.Principal{
			edgeAdminKey:  {IAMID: "IBMid-admin", AccountID: "acct1", Name: "admin@example.com", Type: auth.User},
			edgeReaderKey: {IAMID: "IBMid-reader", AccountID: "acct1", Name: "reader@example.com", Type: auth.User},
		},
		tokens: map[string]auth.Principal{},
	}
}

func (e *identityEdge) AuthenticateAPIKey(_ context.Context, key string) (*auth.Principal, error) {
	p, ok := e.keys[key]
	if !ok {
		return nil, errs.E("edge", errs.Unauthenticated, "BXNIM0415E", "Provided API key could not be found")
	}
	return &p, nil
}

func (e *identityEdge) AuthenticateToken(_ context.Context, tok string) (*auth.Principal, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	p, ok := e.tokens[tok]
	if !ok {
		return nil, errs.E("edge", errs.Unauthenticated, "BXNIM0407E", "Token is not valid")
	}
	return &p, nil
}

// Authorize lets the reader only read.
func (e *identityEdge) Authorize(_ context.Context, p *auth.Principal, action string, _ auth.Resource) error {
	if p.IAMID == "IBMid-reader" && action != auth.PolicyRead {
		return errs.E("edge", errs.Permission, "access_denied", "reader@example.com is not authorized to perform "+action)
	}
	return nil
}

func (e *identityEdge) created() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.posted
}

func (e *identityEdge) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /identity/token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		p, err := e.AuthenticateAPIKey(r.Context(), r.PostForm.Get("apikey"))
		if err != nil {
			httpapi.WriteJSON(w, 400, map[string]any{"errorCode": "BXNIM0415E", "errorMessage": "Provided API key could not be found"})
			return
		}
		tok := "tok-" + p.IAMID + "-" + strings.Repeat("x", 8)
		e.mu.Lock()
		e.tokens[tok] = *p
		e.mu.Unlock()
		httpapi.WriteJSON(w, 200, map[string]any{"access_token": tok, "expires_in": 3600, "token_type": "Bearer"})
	})
	mux.HandleFunc("GET /v1/policies", func(w http.ResponseWriter, r *http.Request) {
		if _, _, err := httpapi.Authenticate(r, e); err != nil {
			httpapi.WriteJSON(w, 401, map[string]any{"errors": []any{map[string]any{"code": "unauthorized", "message": "no token"}}})
			return
		}
		httpapi.WriteJSON(w, 200, map[string]any{"policies": []any{}})
	})
	mux.HandleFunc("POST /v1/policies", func(w http.ResponseWriter, r *http.Request) {
		ctx, p, err := httpapi.Authenticate(r, e)
		if err == nil {
			err = e.Authorize(ctx, p, auth.PolicyWrite, auth.Resource{ServiceName: "kms"})
		}
		if err != nil {
			k := errs.As(err)
			httpapi.WriteJSON(w, k.Kind.Status(), map[string]any{"errors": []any{map[string]any{"code": k.Code, "message": k.Msg}}})
			return
		}
		e.mu.Lock()
		e.posted++
		e.mu.Unlock()
		httpapi.WriteJSON(w, 201, map[string]any{"id": "p1", "type": "authorization"})
	})
	mux.HandleFunc("GET /v2/resource_instances", func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteJSON(w, 200, map[string]any{"rows_count": 0, "resources": []any{}})
	})
	return mux
}

func startEdge(t *testing.T, secure bool) (*httptest.Server, *identityEdge) {
	return startEdgeWithClock(t, secure, nil)
}

func startEdgeWithClock(t *testing.T, secure bool, clk clock.Clock) (*httptest.Server, *identityEdge) {
	t.Helper()
	idp := newIdentityEdge()
	mux := http.NewServeMux()
	api := idp.handler()
	c, err := console.New(console.Config{API: api, Authn: idp, Authz: idp, Secure: secure, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	c.Register(mux)
	mux.Handle("/v1/", api)
	mux.Handle("/v2/", api)
	mux.Handle("/identity/", api)
	srv := httptest.NewServer(httpapi.Middleware(nil, mux))
	t.Cleanup(srv.Close)
	return srv, idp
}

// userAgent is a browser-like client with a cookie jar that does not follow redirects.
func userAgent(t testing.TB) *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

var csrfInput = regexp.MustCompile(`name="csrf_token" value="([^"]+)"`)

func fetch(t testing.TB, hc *http.Client, method, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func csrfOf(t testing.TB, page string) string {
	t.Helper()
	m := csrfInput.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the page:\n%s", page)
	}
	return m[1]
}

// signIn signs in through the form and returns the session's CSRF token.
func signIn(t *testing.T, hc *http.Client, base, key string) string {
	t.Helper()
	_, page := fetch(t, hc, "GET", base+"/console/signin", nil)
	resp, body := fetch(t, hc, "POST", base+"/console/signin", url.Values{"csrf_token": {csrfOf(t, page)}, "apikey": {key}, "next": {"/console/"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("sign-in answered %d:\n%s", resp.StatusCode, body)
	}
	_, page = fetch(t, hc, "GET", base+"/console/iam/authorizations", nil)
	return csrfOf(t, page)
}

func TestSignInSetsAStrictHttpOnlySessionCookieAndKeepsTheTokenServerSide(t *testing.T) {
	for _, secure := range []bool{false, true} {
		srv, _ := startEdge(t, secure)
		hc := userAgent(t)
		_, page := fetch(t, hc, "GET", srv.URL+"/console/signin", nil)
		resp, _ := fetch(t, hc, "POST", srv.URL+"/console/signin", url.Values{"csrf_token": {csrfOf(t, page)}, "apikey": {edgeAdminKey}})
		var session *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == "keyline_session" && c.Value != "" {
				session = c
			}
		}
		if session == nil {
			t.Fatalf("secure=%v: no session cookie; cookies %v", secure, resp.Cookies())
		}
		if !session.HttpOnly || session.SameSite != http.SameSiteStrictMode || session.Secure != secure {
			t.Errorf("secure=%v: cookie %+v: want HttpOnly, SameSite=Strict, Secure=%v", secure, session, secure)
		}
		if strings.Contains(session.Value, "tok-") || len(session.Value) < 40 {
			t.Errorf("the session cookie %q is not a random id", session.Value)
		}
		_, dash := fetch(t, hc, "GET", srv.URL+"/console/", nil)
		if strings.Contains(dash, "tok-IBMid") || strings.Contains(dash, edgeAdminKey) {
			t.Error("a page shows the bearer token or the API key")
		}
		if resp, _ := fetch(t, hc, "GET", srv.URL+"/console/", nil); (resp.Header.Get("Strict-Transport-Security") != "") != secure {
			t.Errorf("secure=%v: Strict-Transport-Security %q", secure, resp.Header.Get("Strict-Transport-Security"))
		}
		if !strings.Contains(dash, "admin@example.com") {
			t.Errorf("the dashboard does not name the signed-in user:\n%s", dash)
		}
	}
}

func TestSignInRefusesABadKeyAndAFormWithoutItsToken(t *testing.T) {
	srv, _ := startEdge(t, false)
	const token = "<fresh>" // each case gets the token of a freshly loaded form
	cases := []struct {
		name   string
		form   url.Values
		status int
		says   string
	}{
		{"wrong key", url.Values{"csrf_token": {token}, "apikey": {"nope"}}, 401, "not valid"},
		{"no key", url.Values{"csrf_token": {token}, "apikey": {""}}, 400, "Enter an API key"},
		{"no form token", url.Values{"apikey": {edgeAdminKey}}, 403, "expired"},
		{"forged form token", url.Values{"csrf_token": {"forged"}, "apikey": {edgeAdminKey}}, 403, "expired"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hc := userAgent(t)
			_, page := fetch(t, hc, "GET", srv.URL+"/console/signin", nil)
			if tc.form.Get("csrf_token") == token {
				tc.form.Set("csrf_token", csrfOf(t, page))
			}
			resp, body := fetch(t, hc, "POST", srv.URL+"/console/signin", tc.form)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.says) {
				t.Errorf("answered %d, want %d saying %q:\n%s", resp.StatusCode, tc.status, tc.says, body)
			}
			for _, c := range resp.Cookies() {
				if c.Name == "keyline_session" && c.Value != "" {
					t.Error("a session was created")
				}
			}
		})
	}
}

func TestFormsWithoutTheSessionsCSRFTokenAreRefused(t *testing.T) {
	srv, idp := startEdge(t, false)
	hc := userAgent(t)
	csrf := signIn(t, hc, srv.URL, edgeAdminKey)
	form := url.Values{"source_service": {"messagehub"}, "target_service": {"kms"}, "role_reader": {"1"}}
	last := "A"
	if strings.HasSuffix(csrf, last) {
		last = "B"
	}
	for _, token := range []string{"", "x", csrf[:len(csrf)-1] + last} {
		f := url.Values{}
		for k, v := range form {
			f[k] = v
		}
		if token != "" {
			f.Set("csrf_token", token)
		}
		resp, body := fetch(t, hc, "POST", srv.URL+"/console/iam/authorizations", f)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "security token") {
			t.Errorf("token %q: answered %d:\n%s", token, resp.StatusCode, body)
		}
	}
	if n := idp.created(); n != 0 {
		t.Fatalf("%d policies were created by refused forms", n)
	}
	form.Set("csrf_token", csrf)
	if resp, body := fetch(t, hc, "POST", srv.URL+"/console/iam/authorizations", form); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a valid form answered %d:\n%s", resp.StatusCode, body)
	}
	if n := idp.created(); n != 1 {
		t.Fatalf("the valid form created %d policies, want 1", n)
	}
}

func TestReaderPostingAnywayGetsTheAPIs403(t *testing.T) {
	srv, idp := startEdge(t, false)
	hc := userAgent(t)
	csrf := signIn(t, hc, srv.URL, edgeReaderKey)
	_, page := fetch(t, hc, "GET", srv.URL+"/console/iam/authorizations", nil)
	if strings.Contains(page, `id="create-authorization"`) {
		t.Error("a reader is shown the Create control")
	}
	resp, body := fetch(t, hc, "POST", srv.URL+"/console/iam/authorizations",
		url.Values{"csrf_token": {csrf}, "source_service": {"messagehub"}, "target_service": {"kms"}, "role_reader": {"1"}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "not authorized") {
		t.Errorf("answered %d:\n%s", resp.StatusCode, body)
	}
	if idp.created() != 0 {
		t.Error("the reader created a policy")
	}
}

func TestPagesNeedASessionAndSignOutEndsIt(t *testing.T) {
	srv, _ := startEdge(t, false)
	hc := userAgent(t)
	resp, _ := fetch(t, hc, "GET", srv.URL+"/console/iam/authorizations", nil)
	if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/console/signin?next=") {
		t.Fatalf("signed out: answered %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	csrf := signIn(t, hc, srv.URL, edgeAdminKey)
	resp, body := fetch(t, hc, "GET", srv.URL+"/console/", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("signed in: %d\n%s", resp.StatusCode, body)
	}
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options"} {
		if resp.Header.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	fetch(t, hc, "POST", srv.URL+"/console/signout", url.Values{"csrf_token": {csrf}})
	resp, _ = fetch(t, hc, "GET", srv.URL+"/console/", nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after sign-out the dashboard answered %d", resp.StatusCode)
	}
}

func TestSignInRedirectStaysOnTheConsole(t *testing.T) {
	srv, _ := startEdge(t, false)
	for _, next := range []string{"https://evil.example/", "//evil.example/", "/console/activity"} {
		hc := userAgent(t)
		_, page := fetch(t, hc, "GET", srv.URL+"/console/signin", nil)
		resp, _ := fetch(t, hc, "POST", srv.URL+"/console/signin", url.Values{"csrf_token": {csrfOf(t, page)}, "apikey": {edgeAdminKey}, "next": {next}})
		loc := resp.Header.Get("Location")
		if !strings.HasPrefix(loc, "/console/") || strings.HasPrefix(loc, "//") {
			t.Errorf("next=%q redirected to %q", next, loc)
		}
	}
}

func TestSessionsEndWithTheirTokenOrAfterIdling(t *testing.T) {
	cases := []struct {
		name  string
		steps []time.Duration // clock advances between page views
		live  bool
	}{
		{"used within the token's life", []time.Duration{20 * time.Minute, 20 * time.Minute, 15 * time.Minute}, true},
		{"past the token's expiry", []time.Duration{25 * time.Minute, 25 * time.Minute, 25 * time.Minute}, false},
		{"idle for half an hour", []time.Duration{31 * time.Minute}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := clock.NewFake(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
			srv, _ := startEdgeWithClock(t, false, clk)
			hc := userAgent(t)
			signIn(t, hc, srv.URL, edgeAdminKey) // the token lives an hour
			var resp *http.Response
			for _, d := range tc.steps {
				clk.Advance(d)
				resp, _ = fetch(t, hc, "GET", srv.URL+"/console/", nil)
			}
			if live := resp.StatusCode == http.StatusOK; live != tc.live {
				t.Fatalf("session live %v (HTTP %d), want %v", live, resp.StatusCode, tc.live)
			}
		})
	}
}
