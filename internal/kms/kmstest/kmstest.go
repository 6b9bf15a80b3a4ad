// Package kmstest assembles a KMS for tests and benchmarks: a fresh SQLite
// store, a master key, a fixed-table authenticator and authorizer evaluated
// with the role tables of package auth, and an Activity Tracker stand-in
// that stores events in the same database, in the same transactions.
package kmstest

import (
	"context"
	"encoding/json"
	"sync"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/store"
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

// Audit stores events in table test_audit_events, appended in the caller's
// transaction or recorded in one of its own.
type Audit struct{ db *store.DB }

// Event is a stored audit event.
type Event struct {
	Action, Target, Outcome, Initiator, CorrelationID string
	ReasonCode                                        int
	RequestData, ResponseData                         map[string]any
}

// NewAudit creates the audit table.
func NewAudit(ctx context.Context, db *store.DB) (*Audit, error) {
	err := db.Migrate(ctx, []store.Migration{{ID: "kmstest/0001", SQL: `CREATE TABLE test_audit_events (
		seq INTEGER PRIMARY KEY AUTOINCREMENT, action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL,
		reason_code INTEGER NOT NULL, initiator TEXT NOT NULL, correlation_id TEXT NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL)`}})
	return &Audit{db: db}, err
}

func (a *Audit) insert(ctx context.Context, tx *store.Tx, ev kms.AuditEvent) error {
	initiator := ""
	if p := auth.FromContext(ctx); p != nil {
		initiator = p.IAMID
	}
	req, _ := json.Marshal(ev.RequestData)
	resp, _ := json.Marshal(ev.ResponseData)
	_, err := tx.Exec(`INSERT INTO test_audit_events (action, target, outcome, reason_code, initiator, correlation_id, request, response)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, ev.Action, ev.TargetID, ev.Outcome, ev.ReasonCode, initiator, httpapi.CorrelationID(ctx), string(req), string(resp))
	return err
}

// Append implements kms.Auditor.
func (a *Audit) Append(ctx context.Context, tx *store.Tx, ev kms.AuditEvent) error {
	return a.insert(ctx, tx, ev)
}

// Record implements kms.Auditor.
func (a *Audit) Record(ctx context.Context, ev kms.AuditEvent) error {
	return a.db.Tx(ctx, func(tx *store.Tx) error { return a.insert(ctx, tx, ev) })
}

// Events returns the stored events in order.
func (a *Audit) Events(ctx context.Context) ([]Event, error) {
	var out []Event
	err := a.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT action, target, outcome, reason_code, initiator, correlation_id, request, response FROM test_audit_events ORDER BY seq`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var e Event
			var req, resp string
			if err := rows.Scan(&e.Action, &e.Target, &e.Outcome, &e.ReasonCode, &e.Initiator, &e.CorrelationID, &req, &resp); err != nil {
				return err
			}
			_ = json.Unmarshal([]byte(req), &e.RequestData)
			_ = json.Unmarshal([]byte(resp), &e.ResponseData)
			out = append(out, e)
		}
		return rows.Err()
	})
	return out, err
}
