package broker

import (
	"context"
	"reflect"
	"strings"
	"time"
)

// ResourceType is an Event Streams IAM resource type: what a policy scoped
// below the whole instance grants a role on.
type ResourceType uint8

const (
	ClusterResource ResourceType = iota + 1
	TopicResource
	GroupResource
	TxnIDResource
	numResourceTypes
)

func (t ResourceType) String() string {
	switch t {
	case ClusterResource:
		return "cluster"
	case TopicResource:
		return "topic"
	case GroupResource:
		return "group"
	case TxnIDResource:
		return "txnid"
	}
	return "unknown"
}

// ParseResourceType reads an IAM resourceType attribute value.
func ParseResourceType(s string) (ResourceType, bool) {
	for t := ClusterResource; t < numResourceTypes; t++ {
		if t.String() == s {
			return t, true
		}
	}
	return 0, false
}

// Grant is a role on the resources of one type: Name is one resource's
// name, "*" for all of them, or a prefix followed by "*" ("orders-*").
// The cluster has no name: a cluster grant's Name is "" or "*".
type Grant struct {
	Type   ResourceType
	Name   string
	Access Access
}

// Login is what a successful authentication established: Access on the
// whole instance (from policies without a resource type, which grant every
// resource) and Grants on resources. Expires, when set, is when the
// credential (an IAM access token) stops being valid: the connection must
// re-authenticate before then.
type Login struct {
	Access  Access
	Grants  []Grant
	Expires time.Time
	// Principal names who logged in (an IAM ID); a re-authentication on
	// the connection must keep it, as Kafka requires (KIP-368).
	Principal string
}

// Credentials are what a client presented in SASL: User and Secret for
// PLAIN, Secret alone (the bearer token) for OAUTHBEARER.
type Credentials struct {
	Mechanism string
	User      string
	Secret    string
}

// LoginChecker checks a login of either mechanism and says what it grants.
// Its error's message is sent to the client, so it must not echo the secret.
type LoginChecker func(ctx context.Context, cr Credentials) (Login, error)

// acl is a login's grants compiled for matching names in memory: a check is
// a map lookup and a scan of the (few) prefix grants, with no allocation.
type acl struct {
	instance Access
	types    [numResourceTypes]typeACL
}

type typeACL struct {
	all      Access            // "*"
	exact    map[string]Access // names
	prefixes []prefixGrant
	best     Access // the highest Access of any grant of the type
}

type prefixGrant struct {
	prefix string
	access Access
}

func compileACL(l Login) *acl {
	a := &acl{instance: l.Access}
	for _, g := range l.Grants {
		if g.Type < ClusterResource || g.Type >= numResourceTypes || g.Access == NoAccess {
			continue
		}
		t := &a.types[g.Type]
		t.best = max(t.best, g.Access)
		switch {
		case g.Name == "*" || (g.Type == ClusterResource && g.Name == ""):
			t.all = max(t.all, g.Access)
		case strings.HasSuffix(g.Name, "*"):
			t.prefixes = append(t.prefixes, prefixGrant{strings.TrimSuffix(g.Name, "*"), g.Access})
		case g.Name != "":
			if t.exact == nil {
				t.exact = map[string]Access{}
			}
			t.exact[g.Name] = max(t.exact[g.Name], g.Access)
		}
	}
	return a
}

// allows reports whether the login may act with need on the named resource.
func (a *acl) allows(typ ResourceType, name string, need Access) bool {
	if a == nil {
		return false
	}
	if a.instance.Allows(need) {
		return true
	}
	t := &a.types[typ]
	if t.best < need {
		return false
	}
	if t.all >= need || t.exact[name] >= need {
		return true
	}
	for _, p := range t.prefixes {
		if p.access >= need && strings.HasPrefix(name, p.prefix) {
			return true
		}
	}
	return false
}

// allowsAny reports whether some resource of the type may be acted on with
// need (Kafka lets a producer that may write a topic be idempotent).
func (a *acl) allowsAny(typ ResourceType, need Access) bool {
	return a != nil && (a.instance.Allows(need) || a.types[typ].best >= need)
}

// equal reports whether two logins grant the same.
func (a *acl) equal(b *acl) bool { return reflect.DeepEqual(a, b) }

// may reports whether the connection's login may act with need on the named
// resource now; nothing before a login or after its revocation.
func (c *conn) may(typ ResourceType, name string, need Access) bool {
	s := c.sess.Load()
	return s != nil && s.acl.allows(typ, name, need)
}

// mayAny is allowsAny for the connection's login.
func (c *conn) mayAny(typ ResourceType, need Access) bool {
	s := c.sess.Load()
	return s != nil && s.acl.allowsAny(typ, need)
}

// authorizeTxnID reports whether the connection may use a transactional id
// (Writer on txnid, as Kafka's WRITE on TransactionalId).
func (c *conn) authorizeTxnID(id string) bool { return c.may(TxnIDResource, id, Writer) }

// mayTopic is may for a topic found by name or id: t when it exists,
// otherwise the name the request gave.
func (c *conn) mayTopic(t *topic, name string, need Access) bool {
	if t != nil {
		name = t.name
	}
	return c.may(TopicResource, name, need)
}
