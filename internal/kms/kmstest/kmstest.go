// Package kmstest holds a fixed-table authenticator and authorizer, evaluated
// with the role tables of package auth, for KMS tests and benchmarks that do
// not need the whole of IAM.
package kmstest

import (
	"context"
	"sync"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
)

// Authn authenticates bearer tokens from a fixed table.
type Authn struct {
	mu     sync.RWMutex
	tokens map[string]*auth.Principal
}

// NewAuthn returns an empty token table.
func NewAuthn() *Authn { return &Authn{tokens: map[string]*auth.Principal{}} }

// Add makes token authenticate as p.
func (a *Authn) Add(token string, p *auth.Principal) {
	a.mu.Lock()
	a.tokens[token] = p
	a.mu.Unlock()
}

// AuthenticateToken implements auth.Authenticator.
func (a *Authn) AuthenticateToken(ctx context.Context, token string) (*auth.Principal, error) {
	a.mu.RLock()
	p := a.tokens[token]
	a.mu.RUnlock()
	if p == nil {
		return nil, errs.E("kmstest.Authn", errs.Unauthenticated, "UNAUTHORIZED_ERR", "invalid token")
	}
	cp := *p
	return &cp, nil
}

// AuthenticateAPIKey implements auth.Authenticator (API keys are tokens here).
func (a *Authn) AuthenticateAPIKey(ctx context.Context, key string) (*auth.Principal, error) {
	return a.AuthenticateToken(ctx, key)
}

// Grant is one policy: a role on the kms instance ("" = every instance).
type Grant struct {
	Role     string
	Instance string
}

// Authz authorizes from fixed grants: access policies per IAM ID and
// service-to-service authorizations per source service name.
type Authz struct {
	mu       sync.RWMutex
	access   map[string][]Grant
	services map[string][]Grant
}

// NewAuthz returns an authorizer that denies everything.
func NewAuthz() *Authz { return &Authz{access: map[string][]Grant{}, services: map[string][]Grant{}} }

// Allow grants iamID role on instance.
func (a *Authz) Allow(iamID string, g Grant) {
	a.mu.Lock()
	a.access[iamID] = append(a.access[iamID], g)
	a.mu.Unlock()
}

// AllowService authorizes service to use kms instances with role.
func (a *Authz) AllowService(service string, g Grant) {
	a.mu.Lock()
	a.services[service] = append(a.services[service], g)
	a.mu.Unlock()
}

// Revoke removes every grant of iamID.
func (a *Authz) Revoke(iamID string) {
	a.mu.Lock()
	delete(a.access, iamID)
	a.mu.Unlock()
}

// Authorize implements auth.Authorizer: deny unless a grant allows.
func (a *Authz) Authorize(ctx context.Context, p *auth.Principal, action string, r auth.Resource) error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var grants []Grant
	actions := func(role string) []string { return auth.AccessActions(r.ServiceName, role) }
	if p.Type == auth.Service {
		grants = a.services[p.ServiceName]
		actions = func(role string) []string { return auth.AuthorizationActions(r.ServiceName, role) }
	} else {
		grants = a.access[p.IAMID]
	}
	for _, g := range grants {
		if (g.Instance == "" || g.Instance == r.ServiceInstance) && auth.Allows(actions(g.Role), action) {
			return nil
		}
	}
	return errs.E("kmstest.Authz", errs.Permission, "FORBIDDEN_ERR", "not allowed")
}
