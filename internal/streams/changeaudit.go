package streams

import (
	"context"
	"net"
	"net/url"
	"strings"
	"sync"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/streams/broker"
)

// adminCaller carries the principal an admin REST call authenticated as,
// from adminLogin to the change recorder, so the call is authenticated once.
type adminCaller struct {
	mu sync.Mutex
	p  *auth.Principal
}

type adminCallerKey struct{}

func withAdminCaller(ctx context.Context) context.Context {
	return context.WithValue(ctx, adminCallerKey{}, &adminCaller{})
}

// setAdminCaller notes who an admin call authenticated as.
func setAdminCaller(ctx context.Context, p *auth.Principal) {
	if c, _ := ctx.Value(adminCallerKey{}).(*adminCaller); c != nil {
		c.mu.Lock()
		c.p = p
		c.mu.Unlock()
	}
}

func adminCallerOf(ctx context.Context) *auth.Principal {
	c, _ := ctx.Value(adminCallerKey{}).(*adminCaller)
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.p
}

// changeRecorder writes the deployment's topic and group changes, over
// Kafka or REST, as Activity Tracker events: event-streams.topic.create and
// the like, on the deployment's CRN. Topic and group names are customer
// data, sealed at rest with the records, so the audit trail (plain SQL)
// never holds them: a topic is named by its id (the target's name), and a
// name is cut out of the reason and the request URI. The initiator is the
// principal of the API key that logged in (Kafka) or of the call's
// credentials (REST).
func (s *Service) changeRecorder(deploymentCRN string) broker.ChangeRecorder {
	return func(ctx context.Context, ch broker.Change) {
		var p *auth.Principal
		if ch.Request != nil {
			if p = adminCallerOf(ctx); p == nil {
				// Unauthenticated: nobody to name, and strangers must not
				// be able to fill the account's trail (the API's other
				// edges do not audit a failed authentication either).
				return
			}
		} else if ch.Login != nil && ch.Login.Password != "" {
			// A change over Kafka is rare: naming its principal may cost
			// an API key lookup.
			if ch.Login.Mechanism == broker.OAuthBearer {
				p, _ = s.iam.AuthenticateToken(ctx, ch.Login.Password)
			} else {
				p, _ = s.iam.AuthenticateAPIKey(ctx, ch.Login.Password)
			}
		}
		if p != nil {
			ctx = auth.WithPrincipal(ctx, p)
		}
		outcome := audit.Success
		if ch.Status >= 300 {
			outcome = audit.Failure
		}
		target := audit.Target{ID: deploymentCRN, Name: ch.TopicID, TypeURI: "event-streams/" + ch.Kind}
		ev := audit.NewEvent(ctx, "event-streams."+ch.Action, target, outcome, ch.Status)
		ev.Reason.ReasonForFailure = withoutName(ch.Reason, ch.Name, ch.Kind)
		if uri, ok := ev.RequestData["requestURI"].(string); ok {
			ev.RequestData["requestURI"] = withoutName(uri, ch.Name, ch.Kind)
			ev.RequestData["requestURI"] = withoutName(ev.RequestData["requestURI"].(string), url.PathEscape(ch.Name), ch.Kind)
		}
		if ch.Login != nil {
			ev.Initiator.Host = audit.Host{Address: ch.Login.Addr, AddressType: addressType(ch.Login.Addr), Agent: "kafka"}
			ev.RequestData = map[string]any{"protocol": "kafka"}
			if p == nil {
				ev.Initiator.ID, ev.Initiator.Name = "unknown", ch.Login.User
			}
		}
		if err := s.audit.Record(ctx, ev); err != nil {
			s.log.Error("streams: could not record a topic or group change", "action", ev.Action, "err", err.Error())
		}
	}
}

// withoutName replaces every occurrence of name in s with {kind}.
func withoutName(s, name, kind string) string {
	if name == "" {
		return s
	}
	return strings.ReplaceAll(s, name, "{"+kind+"}")
}

func addressType(ip string) string {
	switch a := net.ParseIP(ip); {
	case a == nil:
		return ""
	case a.To4() != nil && !strings.Contains(ip, ":"):
		return "IPv4"
	}
	return "IPv6"
}
