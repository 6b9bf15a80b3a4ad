package kpapi_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/kms/kmstest"
	"github.com/keyline/keyline/internal/kms/kpapi"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

func TestMain(m *testing.M) {
	// A 5xx would otherwise cost the client ~15 s of retries.
	kp.RetryMax = 0
	kp.RetryWaitMax = time.Millisecond
	os.Exit(m.Run())
}

const (
	account   = "acct-0001"
	instance  = "3f0c6b5e-8a52-4f5e-9d4c-6b1c2d3e4f50"
	other     = "7a1b2c3d-0000-4000-8000-00000000abcd" // an instance of another account
	manager   = "tok-manager"
	manager2  = "tok-manager2"
	writer    = "tok-writer"
	reader    = "tok-reader"
	purger    = "tok-purger"
	messagehb = "tok-messagehub"
	outsider  = "tok-outsider"
)

// env is a KMS on a fresh database behind a real HTTP server.
type env struct {
	t     testing.TB
	ctx   context.Context
	db    *store.DB
	svc   *kms.Service
	clock *clock.Fake
	audit *audit.Log
	authz *kmstest.Authz
	srv   *httptest.Server
}

func newEnv(t testing.TB) *env {
	t.Helper()
	ctx := context.Background()
	db := storetest.Open(t)
	master, err := seal.New(seal.RandomKey())
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC))
	atLog, err := audit.New(ctx, db, clk, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(atLog.Close)
	authn, authz := kmstest.NewAuthn(), kmstest.NewAuthz()
	svc, err := kms.New(ctx, kms.Config{DB: db, Master: master, Clock: clk, Authorizer: authz, Audit: kms.ActivityTracker(atLog)})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []kms.Instance{{GUID: instance, AccountID: account}, {GUID: other, AccountID: "acct-other"}} {
		if err := svc.CreateInstance(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	users := []struct {
		token, iamID string
		roles        []string
	}{
		{manager, "IBMid-manager", []string{auth.RoleManager}},
		{manager2, "IBMid-manager2", []string{auth.RoleManager}},
		{writer, "IBMid-writer", []string{auth.RoleWriter}},
		{reader, "IBMid-reader", []string{auth.RoleReader}},
		{purger, "IBMid-purger", []string{auth.RoleManager, auth.RoleKeyPurge}},
		{outsider, "IBMid-outsider", nil},
	}
	for _, u := range users {
		authn.Add(u.token, &auth.Principal{IAMID: u.iamID, AccountID: account, Name: u.iamID, Type: auth.User, CredentialType: "token"})
		for _, r := range u.roles {
			authz.Allow(u.iamID, kmstest.Grant{Role: r, Instance: instance})
		}
	}
	authn.Add(messagehb, &auth.Principal{IAMID: "crn-messagehub", AccountID: account, Type: auth.Service, ServiceName: "messagehub",
		CredentialType: "s2s-authorization"})
	authz.AllowService("messagehub", kmstest.Grant{Role: auth.RoleReader, Instance: instance})
	mux := http.NewServeMux()
	kpapi.New(svc, authn, nil).Register(mux)
	srv := httptest.NewServer(httpapi.Middleware(nil, mux))
	t.Cleanup(srv.Close)
	return &env{t: t, ctx: ctx, db: db, svc: svc, clock: clk, audit: atLog, authz: authz, srv: srv}
}

// client is the official Go client acting with token on the test instance.
func (e *env) client(token string) *kp.Client {
	e.t.Helper()
	c, err := kp.New(kp.ClientConfig{BaseURL: e.srv.URL, Authorization: "Bearer " + token, InstanceID: instance}, kp.DefaultTransport())
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// asService is a context carrying the messagehub service principal, for
// in-process calls.
func asService() context.Context {
	return auth.WithPrincipal(context.Background(), &auth.Principal{IAMID: "crn-messagehub", AccountID: account, Type: auth.Service,
		ServiceName: "messagehub"})
}

func asUser(iamID string) context.Context {
	return auth.WithPrincipal(context.Background(), &auth.Principal{IAMID: iamID, AccountID: account, Type: auth.User})
}

// kpStatus is the HTTP status of a client error (0 if it is not one).
func kpStatus(err error) int {
	if e, ok := err.(*kp.Error); ok {
		return e.StatusCode
	}
	return 0
}

// kpCode is the first reason code of a client error.
func kpCode(err error) string {
	if e, ok := err.(*kp.Error); ok && len(e.Reasons) > 0 {
		return e.Reasons[0].Code
	}
	return ""
}

// wantErr fails unless err is a Key Protect error with status and code.
func wantErr(t *testing.T, err error, status int, code string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want %d %s, got success", status, code)
	}
	if kpStatus(err) != status || (code != "" && kpCode(err) != code) {
		t.Fatalf("want %d %s, got %d %s: %v", status, code, kpStatus(err), kpCode(err), err)
	}
}

func must[T any](t *testing.T) func(v T, err error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// kpErrorBody is Key Protect's error envelope, as tests read it.
type kpErrorBody struct {
	Metadata struct {
		CollectionType string `json:"collectionType"`
	} `json:"metadata"`
	Resources []struct {
		ErrorMsg string `json:"errorMsg"`
		Reasons  []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Status  int    `json:"status"`
		} `json:"reasons"`
	} `json:"resources"`
}
