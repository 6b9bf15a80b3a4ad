// Package iamtest starts a real IAM service on a fresh SQLite database for
// tests, bootstrapped with an administrator, and offers shortcuts to add
// users and grant them roles.
package iamtest

import (
	"context"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

// Env is a bootstrapped IAM service.
type Env struct {
	DB       *store.DB
	Master   *seal.AEAD
	Audit    *audit.Log
	Clock    *clock.Fake
	Service  *iam.Service
	Account  iam.Account
	AdminKey string
	Admin    *auth.Principal
}

// Issuer is the token issuer of test services.
const Issuer = "https://iam.test"

// New starts IAM on a fresh database (storetest.Open), on a fake clock,
// bootstrapped with a random administrator API key.
func New(t testing.TB) *Env {
	t.Helper()
	ctx := context.Background()
	db := storetest.Open(t)
	master, err := seal.New(seal.RandomKey())
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{DB: db, Master: master, Clock: clock.NewFake(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))}
	if e.Audit, err = audit.New(ctx, db, e.Clock, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Audit.Close)
	e.Reopen(t)
	account, key, created, err := e.Service.Bootstrap(ctx, "")
	if err != nil || !created {
		t.Fatalf("Bootstrap: created=%v err=%v", created, err)
	}
	e.Account, e.AdminKey = account, key
	if e.Admin, err = e.Service.AuthenticateAPIKey(ctx, key); err != nil {
		t.Fatal(err)
	}
	return e
}

// Reopen builds a new Service over the same database and master key, as a
// restart would.
func (e *Env) Reopen(t testing.TB) {
	t.Helper()
	svc, err := iam.New(context.Background(), iam.Config{DB: e.DB, Master: e.Master, Audit: e.Audit, Clock: e.Clock, Issuer: Issuer})
	if err != nil {
		t.Fatal(err)
	}
	e.Service = svc
}

// AsAdmin is a context acting as the administrator.
func (e *Env) AsAdmin() context.Context { return auth.WithPrincipal(context.Background(), e.Admin) }

// NewUser invites a user and creates an API key for them as the administrator.
func (e *Env) NewUser(t testing.TB, email string) (*auth.Principal, string) {
	t.Helper()
	u, err := e.Service.InviteUser(e.AsAdmin(), e.Account.ID, email)
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := e.Service.CreateAPIKey(e.AsAdmin(), iam.APIKeyRequest{Name: email + "-key", IAMID: u.IAMID})
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.Service.AuthenticateAPIKey(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	return p, key
}

// Grant gives iamID the roles on r through an access policy created by the administrator.
func (e *Env) Grant(t testing.TB, iamID string, r auth.Resource, roles ...string) iam.Policy {
	t.Helper()
	req := iam.PolicyRequest{Type: iam.TypeAccess,
		Subjects:  []iam.PolicySubject{{Attributes: []iam.SubjectAttribute{{Name: "iam_id", Value: iamID}}}},
		Resources: []iam.PolicyResource{{Attributes: iam.ResourceAttributes(r)}}}
	for _, role := range roles {
		req.Roles = append(req.Roles, iam.PolicyRole{RoleID: role})
	}
	p, err := e.Service.CreatePolicy(e.AsAdmin(), req)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Authorize creates, as the administrator, an authorization from a source
// service (all its instances when sourceInstance is "") to target.
func (e *Env) Authorize(t testing.TB, sourceService, sourceInstance string, target auth.Resource, roles ...string) iam.Policy {
	t.Helper()
	subject := []iam.SubjectAttribute{{Name: "accountId", Value: e.Account.ID}, {Name: "serviceName", Value: sourceService}}
	if sourceInstance != "" {
		subject = append(subject, iam.SubjectAttribute{Name: "serviceInstance", Value: sourceInstance})
	}
	req := iam.PolicyRequest{Type: iam.TypeAuthorization,
		Subjects:  []iam.PolicySubject{{Attributes: subject}},
		Resources: []iam.PolicyResource{{Attributes: iam.ResourceAttributes(target)}}}
	for _, role := range roles {
		req.Roles = append(req.Roles, iam.PolicyRole{RoleID: role})
	}
	p, err := e.Service.CreatePolicy(e.AsAdmin(), req)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
