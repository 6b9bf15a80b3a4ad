// Package auth holds what every service needs to know about who is calling
// and whether they may: the Principal, the Resource it acts on, and the
// Authenticator and Authorizer interfaces that IAM implements.
package auth

import (
	"context"
	"time"
)

// PrincipalType says what kind of identity a principal is.
type PrincipalType string

const (
	User      PrincipalType = "user"      // a person, signed in with an API key
	ServiceID PrincipalType = "serviceid" // a service ID of the account
	Service   PrincipalType = "service"   // a Keyline service (messagehub, is) acting for one of its instances
)

// Principal is an authenticated caller.
type Principal struct {
	IAMID     string // "IBMid-...", "iam-ServiceId-...", or "crn-<source instance CRN>" for a service
	AccountID string // the account the identity belongs to
	Name      string
	Type      PrincipalType
	// For Type == Service: the service acting (e.g. "messagehub", "is") and the
	// instance it acts for (GUID and CRN), matched against authorization policies.
	ServiceName    string
	SourceInstance string
	SourceCRN      string
	// CredentialType is how the caller proved who it is: "apikey", "token",
	// "s2s-authorization" (CADF initiator.credential.type).
	CredentialType string
	// TokenID is the jti of the bearer token used, if any, and
	// TokenExpires when that token expires.
	TokenID      string
	TokenExpires time.Time
}

// Resource is what an action is performed on, in IAM's attribute terms.
type Resource struct {
	AccountID       string
	ServiceName     string // "kms", "messagehub", "iam-identity", "resource-controller"
	ServiceInstance string // instance GUID; "" for service-wide actions
	ResourceType    string // "key", "topic", ...
	ResourceID      string
}

// Grant is what one access policy scoped to a resource type (an Event
// Streams topic, say) gives a principal within a service instance: the
// actions of its roles on the resources of ResourceType named Resource, a
// prefix ending in "*", or "" for all of them.
type Grant struct {
	ResourceType string
	Resource     string
	Actions      []string
}

// StreamsResourceTypes are the resource types Event Streams (messagehub)
// policies may be scoped to.
var StreamsResourceTypes = []string{"cluster", "topic", "group", "txnid"}

// Authenticator turns credentials into a principal.
type Authenticator interface {
	// AuthenticateToken verifies a bearer token (without the "Bearer " prefix).
	AuthenticateToken(ctx context.Context, token string) (*Principal, error)
	// AuthenticateAPIKey verifies an API key, e.g. a Kafka SASL PLAIN password
	// or a console sign-in.
	AuthenticateAPIKey(ctx context.Context, apikey string) (*Principal, error)
}

// Authorizer decides whether a principal may perform an action. It returns
// nil when a policy allows it and an errs.Permission error otherwise: deny
// unless a policy allows. It is consulted on every call; nothing is cached
// past a revocation.
type Authorizer interface {
	Authorize(ctx context.Context, p *Principal, action string, r Resource) error
}

type ctxKey struct{}

// WithPrincipal returns a context carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the principal in ctx, or nil.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}
