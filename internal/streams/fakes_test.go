package streams

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
)

// testKMS is an in-process Key Protect with real AES-256-GCM wrapping, key
// versions, states, service-to-service authorizations checked on every
// call, registrations and lifecycle events.
type testKMS struct {
	mu      sync.Mutex
	keys    map[string]*testKey // by CRN
	readers map[string]bool     // "<account>/<kms instance>": messagehub -> kms Reader
	deleg   map[string]bool     // the same with AuthorizationDelegator
	regs    map[[2]string]string
	events  []KeyEvent
	acks    []testAck
	notes   chan struct{}
	down    bool
}

type testKey struct {
	crn, account, region, instance, id string
	state                              int
	standard, purged                   bool
	versions                           []*seal.AEAD
	versionIDs                         []string
}

type testAck struct {
	Event   KeyEvent
	State   string
	Version string
}

func newTestKMS() *testKMS {
	return &testKMS{keys: map[string]*testKey{}, readers: map[string]bool{}, deleg: map[string]bool{},
		regs: map[[2]string]string{}, notes: make(chan struct{}, 1)}
}

// addKey creates a root (or standard) key and returns its CRN.
func (k *testKMS) addKey(t testing.TB, account, region, instance string, standard bool) string {
	t.Helper()
	id := uuid.NewString()
	c := fmt.Sprintf("crn:v1:bluemix:public:kms:%s:a/%s:%s:key:%s", region, account, instance, id)
	k.mu.Lock()
	defer k.mu.Unlock()
	key := &testKey{crn: c, account: account, region: region, instance: instance, id: id, state: KeyActive, standard: standard}
	key.addVersion()
	k.keys[c] = key
	return c
}

func (key *testKey) addVersion() {
	a, err := seal.New(seal.RandomKey())
	if err != nil {
		panic(err)
	}
	key.versions = append(key.versions, a)
	key.versionIDs = append(key.versionIDs, uuid.NewString())
}

func (k *testKMS) authorize(account, instance string, delegator bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.readers[account+"/"+instance] = true
	k.deleg[account+"/"+instance] = delegator
}

func (k *testKMS) revoke(account, instance string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.readers, account+"/"+instance)
}

// check finds the key and checks the caller's service authorization.
func (k *testKMS) check(ctx context.Context, ref crn.KeyRef) (*testKey, error) {
	const op = "testkms"
	if k.down {
		return nil, errs.E(op, errs.Unavailable, "", "KMS down")
	}
	// As Key Protect, it finds the key by instance and id: a reference
	// whose parts do not match its CRN names no key.
	key := k.keys[ref.CRN]
	if key == nil || key.purged || key.instance != ref.Instance || key.id != ref.ID {
		return nil, errs.E(op, errs.NotExist, "KEY_NOT_FOUND_ERR", "Key does not exist")
	}
	p := auth.FromContext(ctx)
	if p == nil || p.Type != auth.Service || p.ServiceName != ServiceName || !k.readers[key.account+"/"+key.instance] {
		return nil, errs.E(op, errs.Permission, "UNAUTHORIZED_ERR", "The user does not have access to the key")
	}
	return key, nil
}

func (k *testKMS) KeyInfo(ctx context.Context, ref crn.KeyRef) (KeyInfo, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, err := k.check(ctx, ref)
	if err != nil {
		return KeyInfo{}, err
	}
	return KeyInfo{CRN: key.crn, State: key.state, Extractable: key.standard, AccountID: key.account, Region: key.region,
		InstanceGUID: key.instance, Version: key.versionIDs[len(key.versionIDs)-1]}, nil
}

func aadBytes(aad []string) []byte { return []byte(strings.Join(aad, "\x00")) }

func (key *testKey) wrapLatest(dek []byte, aad []string) ([]byte, string) {
	v := len(key.versions) - 1
	return append([]byte{byte(v)}, key.versions[v].Seal(dek, aadBytes(aad))...), key.versionIDs[v]
}

func (k *testKMS) Wrap(ctx context.Context, ref crn.KeyRef, dek []byte, aad []string) ([]byte, string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, err := k.check(ctx, ref)
	if err != nil {
		return nil, "", err
	}
	if key.state != KeyActive || key.standard {
		return nil, "", errs.E("testkms", errs.Conflict, "KEY_ACTION_INVALID_STATE_ERR", "Key is not in a valid state")
	}
	w, v := key.wrapLatest(dek, aad)
	return w, v, nil
}

func (k *testKMS) unwrapLocked(ctx context.Context, ref crn.KeyRef, wrapped []byte, aad []string) (*testKey, []byte, int, error) {
	key, err := k.check(ctx, ref)
	if err != nil {
		return nil, nil, 0, err
	}
	switch key.state {
	case KeySuspended:
		return nil, nil, 0, errs.E("testkms", errs.Conflict, "KEY_ACTION_INVALID_STATE_ERR", "Key is disabled")
	case KeyDestroyed:
		return nil, nil, 0, errs.E("testkms", errs.Gone, "KEY_DELETED_ERR", "Key has been deleted")
	}
	if len(wrapped) < 1 || int(wrapped[0]) >= len(key.versions) {
		return nil, nil, 0, errs.E("testkms", errs.Invalid, "UNWRAPPING_ERR", "The ciphertext is invalid")
	}
	v := int(wrapped[0])
	dek, err := key.versions[v].Open(wrapped[1:], aadBytes(aad))
	if err != nil {
		return nil, nil, 0, errs.E("testkms", errs.Invalid, "UNWRAPPING_ERR", "The ciphertext is invalid")
	}
	return key, dek, v, nil
}

func (k *testKMS) Unwrap(ctx context.Context, ref crn.KeyRef, wrapped []byte, aad []string) ([]byte, []byte, string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, dek, v, err := k.unwrapLocked(ctx, ref, wrapped, aad)
	if err != nil {
		return nil, nil, "", err
	}
	if v == len(key.versions)-1 {
		return dek, nil, key.versionIDs[v], nil
	}
	rw, ver := key.wrapLatest(dek, aad)
	return dek, rw, ver, nil
}

func (k *testKMS) Rewrap(ctx context.Context, ref crn.KeyRef, wrapped []byte, aad []string) ([]byte, string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, dek, _, err := k.unwrapLocked(ctx, ref, wrapped, aad)
	if err != nil {
		return nil, "", err
	}
	defer seal.Wipe(dek)
	rw, ver := key.wrapLatest(dek, aad)
	return rw, ver, nil
}

func (k *testKMS) Register(ctx context.Context, ref crn.KeyRef, resourceCRN, version string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	key, err := k.check(ctx, ref)
	if err != nil {
		return err
	}
	if key.state != KeyActive {
		return errs.E("testkms", errs.Unprocessable, "KEY_INVALID_STATE_ERR", "Key is not active")
	}
	k.regs[[2]string{ref.CRN, resourceCRN}] = version
	return nil
}

func (k *testKMS) UpdateRegistration(ctx context.Context, ref crn.KeyRef, resourceCRN, version string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, err := k.check(ctx, ref); err != nil {
		return err
	}
	if _, ok := k.regs[[2]string{ref.CRN, resourceCRN}]; !ok {
		return errs.E("testkms", errs.NotExist, "NOT_FOUND_ERR", "no registration")
	}
	k.regs[[2]string{ref.CRN, resourceCRN}] = version
	return nil
}

func (k *testKMS) Unregister(ctx context.Context, ref crn.KeyRef, resourceCRN string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, err := k.check(ctx, ref); err != nil {
		return err
	}
	delete(k.regs, [2]string{ref.CRN, resourceCRN})
	return nil
}

func (k *testKMS) registration(keyCRN, resourceCRN string) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.regs[[2]string{keyCRN, resourceCRN}]
	return v, ok
}

func (k *testKMS) PendingEvents(ctx context.Context) ([]KeyEvent, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p := auth.FromContext(ctx); p == nil || p.ServiceName != ServiceName {
		return nil, errs.E("testkms", errs.Permission, "", "service only")
	}
	return append([]KeyEvent(nil), k.events...), nil
}

func (k *testKMS) Notifications() <-chan struct{} { return k.notes }

func (k *testKMS) AckEvent(ctx context.Context, ev KeyEvent, state, version string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i, e := range k.events {
		if e.ID == ev.ID {
			k.events = append(k.events[:i], k.events[i+1:]...)
			k.acks = append(k.acks, testAck{ev, state, version})
			return nil
		}
	}
	return errs.E("testkms", errs.NotExist, "", "no such event")
}

func (k *testKMS) ackFor(id string) (testAck, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, a := range k.acks {
		if a.Event.ID == id {
			return a, true
		}
	}
	return testAck{}, false
}

// act applies a lifecycle action to a key as its owner would and notifies
// every registered resource; it returns the events' IDs.
func (k *testKMS) act(t testing.TB, keyCRN, action string) []string {
	t.Helper()
	k.mu.Lock()
	key := k.keys[keyCRN]
	switch action {
	case ActionRotate:
		key.addVersion()
	case ActionDisable:
		key.state = KeySuspended
	case ActionEnable, ActionRestore:
		key.state = KeyActive
	case ActionDelete:
		key.state = KeyDestroyed
	case "purge":
		key.purged = true
		k.mu.Unlock()
		return nil
	}
	var resources []string
	for reg := range k.regs {
		if reg[0] == keyCRN {
			resources = append(resources, reg[1])
		}
	}
	var ids []string
	if len(resources) > 0 {
		ev := KeyEvent{ID: uuid.NewString(), Key: crn.KeyRef{CRN: keyCRN, Instance: key.instance, ID: key.id}, ResourceCRNs: resources, Action: action,
			KeyVersion: key.versionIDs[len(key.versionIDs)-1], CorrelationID: uuid.NewString()}
		k.events = append(k.events, ev)
		ids = append(ids, ev.ID)
	}
	k.mu.Unlock()
	select {
	case k.notes <- struct{}{}:
	default:
	}
	return ids
}

func (k *testKMS) latestVersion(keyCRN string) string {
	k.mu.Lock()
	defer k.mu.Unlock()
	key := k.keys[keyCRN]
	return key.versionIDs[len(key.versionIDs)-1]
}

// testIAM authenticates API keys, each granting one role on one
// deployment, and creates dependent authorizations when the source's
// authorization lets it delegate.
type testIAM struct {
	mu        sync.Mutex
	kms       *testKMS
	apikeys   map[string]testGrant
	dependent []testDependent
}

type testGrant struct {
	principal *auth.Principal
	guid      string
	role      string
}

type testDependent struct {
	Source, Service string
	Target          auth.Resource
	Role            string
}

func newTestIAM(k *testKMS) *testIAM { return &testIAM{kms: k, apikeys: map[string]testGrant{}} }

func (i *testIAM) grant(account, guid, role string) string {
	i.mu.Lock()
	defer i.mu.Unlock()
	key := "apikey-" + uuid.NewString()
	i.apikeys[key] = testGrant{principal: &auth.Principal{IAMID: "iam-ServiceId-" + uuid.NewString(), AccountID: account, Type: auth.ServiceID, CredentialType: "apikey"}, guid: guid, role: role}
	return key
}

func (i *testIAM) AuthenticateToken(ctx context.Context, token string) (*auth.Principal, error) {
	return i.AuthenticateAPIKey(ctx, token)
}

func (i *testIAM) AuthenticateAPIKey(_ context.Context, key string) (*auth.Principal, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	g, ok := i.apikeys[key]
	if !ok {
		return nil, errs.E("testiam", errs.Unauthenticated, "", "The API key is not valid")
	}
	return g.principal, nil
}

func (i *testIAM) Authorize(_ context.Context, p *auth.Principal, action string, r auth.Resource) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	for _, g := range i.apikeys {
		if g.principal == p && g.guid == r.ServiceInstance && p.AccountID == r.AccountID &&
			(auth.Allows(auth.AccessActions(ServiceName, g.role), action) || (action == auth.InstanceRead && g.role != "")) {
			return nil
		}
	}
	return errs.E("testiam", errs.Permission, "", "not allowed")
}

// ResourceGrants: the test IAM's API keys grant whole deployments only.
func (i *testIAM) ResourceGrants(context.Context, *auth.Principal, auth.Resource) ([]auth.Grant, error) {
	return nil, nil
}

func (i *testIAM) CreateDependentAuthorization(_ context.Context, source *auth.Principal, service string, target auth.Resource, role string) error {
	i.kms.mu.Lock()
	ok := i.kms.deleg[target.AccountID+"/"+target.ServiceInstance]
	i.kms.mu.Unlock()
	if !ok {
		return errs.E("testiam", errs.Permission, "", "the source cannot delegate")
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.dependent = append(i.dependent, testDependent{Source: source.IAMID, Service: service, Target: target, Role: role})
	return nil
}

// credentials mints an API key with role on the deployment, as
// internal/server does for a resource key.
func (i *testIAM) credentials(account, guid, name, role string) ServiceCredentials {
	key := i.grant(account, guid, role)
	return ServiceCredentials{APIKey: key, IAMID: i.apikeys[key].principal.IAMID, Name: name, Role: role}
}

// testTasks keeps every task and its progress.
type testTasks struct {
	mu    sync.Mutex
	tasks []*testTask
}

type testTask struct {
	mu          sync.Mutex
	Deployment  string
	Description string
	Status      string
	Steps       []int
	Reason      string
}

func (ts *testTasks) Start(_ context.Context, deploymentCRN, description string) (Task, error) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	t := &testTask{Deployment: deploymentCRN, Description: description, Status: "running"}
	ts.tasks = append(ts.tasks, t)
	return t, nil
}

func (ts *testTasks) all() []*testTask {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]*testTask(nil), ts.tasks...)
}

func (t *testTask) Progress(_ context.Context, pct int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.Steps = append(t.Steps, pct)
	return nil
}

func (t *testTask) Complete(context.Context) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.Status = "completed"
	return nil
}

func (t *testTask) Fail(_ context.Context, reason string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.Status, t.Reason = "failed", reason
	return nil
}

func (t *testTask) status() (string, []int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.Status, append([]int(nil), t.Steps...)
}

// testStates is the resource controller's state of each instance.
type testStates struct {
	mu     sync.Mutex
	states map[string][2]string
}

func (s *testStates) SetState(_ context.Context, guid, state, reason string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.states == nil {
		s.states = map[string][2]string{}
	}
	s.states[guid] = [2]string{state, reason}
	return nil
}

func (s *testStates) get(guid string) (string, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.states[guid]
	return st[0], st[1]
}
