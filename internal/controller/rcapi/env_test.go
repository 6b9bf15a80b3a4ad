package rcapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

// recordingBroker is a service that keeps its instances in memory and
// records every call the controller makes to it.
type recordingBroker struct {
	mu    sync.Mutex
	calls []string // "Provision <guid>"
	state map[string]string
	// What the next calls do.
	provisionErr error
	warnings     []string
	reclaimFails int // how many Reclaim calls fail before one succeeds
	revoked      []string
}

func newBroker() *recordingBroker { return &recordingBroker{state: map[string]string{}} }

func (b *recordingBroker) record(method, guid string) {
	b.calls = append(b.calls, method+" "+guid)
}

func (b *recordingBroker) Provision(ctx context.Context, inst controller.Instance, params map[string]any) ([]string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.record("Provision", inst.GUID)
	if b.provisionErr != nil {
		return nil, b.provisionErr
	}
	if k, ok := params["disk_encryption_key_crn"].(string); ok && !strings.HasPrefix(k, "crn:") {
		return nil, errs.E("broker.Provision", errs.Invalid, "INVALID_KEY_CRN", "disk_encryption_key_crn must be the full CRN of a root key")
	}
	b.state[inst.GUID] = "running"
	return b.warnings, nil
}

func (b *recordingBroker) Suspend(ctx context.Context, inst controller.Instance) error {
	return b.transition("Suspend", inst.GUID, "running", "suspended")
}

func (b *recordingBroker) Resume(ctx context.Context, inst controller.Instance) error {
	return b.transition("Resume", inst.GUID, "suspended", "running")
}

func (b *recordingBroker) transition(method, guid, from, to string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.record(method, guid)
	if b.state[guid] != from {
		return fmt.Errorf("%s of a %s instance", method, b.state[guid])
	}
	b.state[guid] = to
	return nil
}

func (b *recordingBroker) Reclaim(ctx context.Context, inst controller.Instance) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.record("Reclaim", inst.GUID)
	if b.reclaimFails > 0 {
		b.reclaimFails--
		return errs.E("broker.Reclaim", errs.Unavailable, "STORAGE_UNAVAILABLE", "The storage of the deployment is unavailable")
	}
	delete(b.state, inst.GUID)
	return nil
}

func (b *recordingBroker) Credentials(ctx context.Context, inst controller.Instance, key controller.ResourceKey) (map[string]any, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.record("Credentials", inst.GUID)
	return map[string]any{"apikey": "secret-for-" + key.GUID, "iam_role_crn": key.Role}, nil
}

func (b *recordingBroker) RevokeCredentials(ctx context.Context, inst controller.Instance, key controller.ResourceKey) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.revoked = append(b.revoked, key.GUID)
	return nil
}

func (b *recordingBroker) count(method, guid string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for _, c := range b.calls {
		if c == method+" "+guid {
			n++
		}
	}
	return n
}

func (b *recordingBroker) set(f func(b *recordingBroker)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	f(b)
}

// accessPolicies authenticates bearer tokens of a few users and authorizes
// them by their access policies, with the roles' actions from auth.
type accessPolicies struct {
	users  map[string]*auth.Principal // token -> principal
	grants map[string][]grant         // IAM ID -> grants
}

type grant struct {
	service, instance, role string // instance "" means all instances of the service
}

func (a *accessPolicies) AuthenticateToken(ctx context.Context, token string) (*auth.Principal, error) {
	if p, ok := a.users[token]; ok {
		return p, nil
	}
	return nil, errs.E("test.Authenticate", errs.Unauthenticated, "UNAUTHENTICATED", "The token is not valid")
}

func (a *accessPolicies) AuthenticateAPIKey(ctx context.Context, key string) (*auth.Principal, error) {
	return a.AuthenticateToken(ctx, key)
}

func (a *accessPolicies) Authorize(ctx context.Context, p *auth.Principal, action string, r auth.Resource) error {
	if p.AccountID == r.AccountID {
		for _, g := range a.grants[p.IAMID] {
			if g.service == r.ServiceName && (g.instance == "" || g.instance == r.ServiceInstance) && auth.Allows(auth.AccessActions(g.service, g.role), action) {
				return nil
			}
		}
	}
	return errs.Ef("test.Authorize", errs.Permission, "FORBIDDEN", "You are not authorized to perform %s", action)
}

const (
	accountA = "a1b2c3d4e5f60718293a4b5c6d7e8f90"
	accountB = "0f9e8d7c6b5a49382716f5e4d3c2b1a0"
)

func newPolicies() *accessPolicies {
	return &accessPolicies{
		users: map[string]*auth.Principal{
			"alice":  {IAMID: "IBMid-alice", AccountID: accountA, Name: "alice", Type: auth.User, CredentialType: "apikey"},
			"viewer": {IAMID: "IBMid-viewer", AccountID: accountA, Name: "viewer", Type: auth.User, CredentialType: "apikey"},
			"nobody": {IAMID: "IBMid-nobody", AccountID: accountA, Name: "nobody", Type: auth.User, CredentialType: "apikey"},
			"bob":    {IAMID: "IBMid-bob", AccountID: accountB, Name: "bob", Type: auth.User, CredentialType: "apikey"},
		},
		grants: map[string][]grant{
			"IBMid-alice":  {{"kms", "", auth.RoleAdministrator}, {"messagehub", "", auth.RoleAdministrator}},
			"IBMid-viewer": {{"kms", "", auth.RoleViewer}, {"messagehub", "", auth.RoleViewer}},
			"IBMid-bob":    {{"kms", "", auth.RoleAdministrator}, {"messagehub", "", auth.RoleAdministrator}},
		},
	}
}

// env is a controller with both services, served over HTTP, on a fresh
// database, with the reclamation scheduler running on a fake clock.
type env struct {
	t        testing.TB
	dir      string
	dbURL    string // "" for SQLite in dir
	clock    *clock.Fake
	policies *accessPolicies
	kms, es  *recordingBroker
	db       *store.DB
	audit    *audit.Log
	ctl      *controller.Controller
	srv      *httptest.Server
	stop     func()
	sealer   *seal.AEAD // nil: onetime credentials
}

var epoch = time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)

func newEnv(t testing.TB) *env {
	e := &env{t: t, dir: t.TempDir(), dbURL: storetest.URL(t), clock: clock.NewFake(epoch), policies: newPolicies(), kms: newBroker(), es: newBroker()}
	e.start()
	t.Cleanup(e.shutdown)
	return e
}

// start opens the database and serves a new controller on it: called again
// after shutdown, it is a restart of the process.
func (e *env) start() {
	t := e.t
	ctx := context.Background()
	db, err := store.Open(ctx, e.dir, e.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	log, err := audit.New(ctx, db, e.clock, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctl, err := controller.New(ctx, controller.Config{DB: db, Audit: log, Clock: e.clock, Authorizer: e.policies, Sealer: e.sealer})
	if err != nil {
		t.Fatal(err)
	}
	if err := ctl.Register(controller.KeyProtect(), e.kms); err != nil {
		t.Fatal(err)
	}
	if err := ctl.Register(controller.EventStreams(), e.es); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	New(ctl, e.policies, nil).Register(mux)
	srv := httptest.NewServer(httpapi.Middleware(nil, mux))
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctl.Run(runCtx)
	}()
	e.db, e.audit, e.ctl, e.srv = db, log, ctl, srv
	e.stop = func() {
		cancel()
		<-done
		srv.Close()
		log.Close()
		db.Close()
	}
}

func (e *env) shutdown() {
	if e.stop != nil {
		e.stop()
		e.stop = nil
	}
}

func (e *env) restart() {
	e.shutdown()
	e.start()
}

// response is a decoded HTTP response.
type response struct {
	status int
	header http.Header
	body   map[string]any
	raw    string
}

// do sends a request as the user whose token is given ("" sends none).
func (e *env) do(token, method, path string, body any) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	out := response{status: res.StatusCode, header: res.Header, raw: string(raw)}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out.body); err != nil {
			e.t.Fatalf("%s %s: response is not a JSON object: %s", method, path, raw)
		}
	}
	return out
}

// want fails the test unless the response has the status.
func (r response) want(t testing.TB, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.raw)
	}
	return r
}

func (r response) str(key string) string {
	s, _ := r.body[key].(string)
	return s
}

// createInstance creates an instance as alice and returns it.
func (e *env) createInstance(name, plan string, params map[string]any) response {
	e.t.Helper()
	body := map[string]any{"name": name, "target": "us-south", "resource_plan_id": plan}
	if params != nil {
		body["parameters"] = params
	}
	return e.do("alice", "POST", "/v2/resource_instances", body).want(e.t, http.StatusCreated)
}

const (
	kmsPlan = "eedd3585-90c6-4c8f-be3d-062069e99fc3"
	esPlan  = "eventstreams-gen2-standard"
	keyCRN  = "crn:v1:bluemix:public:kms:us-south:a/a1b2c3d4e5f60718293a4b5c6d7e8f90:12e8c9c2-a162-472d-b7d6-8b9a86b815a6:key:02fd6835-6001-4482-a892-13bd2085f75d"
)

// waitFor waits for a condition that another goroutine (the scheduler) makes true.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func escaped(crn string) string { return url.PathEscape(crn) }

// errorCode is the first error code of an RC error body.
func (r response) errorCode() string {
	list, _ := r.body["errors"].([]any)
	if len(list) == 0 {
		return ""
	}
	first, _ := list[0].(map[string]any)
	code, _ := first["code"].(string)
	return code
}

var errBrokerDown = errors.New("connection refused to 10.0.0.7:9092")

// events returns the account's audit events for action, oldest first.
func (e *env) events(account, action string) []audit.Event {
	e.t.Helper()
	page, err := e.audit.Query(context.Background(), audit.Filter{AccountID: account, Action: action, Limit: 500})
	if err != nil {
		e.t.Fatal(err)
	}
	out := page.Events
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}
