// Package audit is Keyline's Activity Tracker: every call of every service
// becomes a CADF event, stored durably, queryable and followable as a stream.
package audit

import (
	"context"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/httpapi"
)

// Event is one CADF event in the field layout of IBM Cloud Activity Tracker.
type Event struct {
	ID              string         `json:"id"`
	EventTime       string         `json:"eventTime"`
	Action          string         `json:"action"`
	Outcome         string         `json:"outcome"`
	Message         string         `json:"message"`
	Severity        string         `json:"severity"`
	Initiator       Initiator      `json:"initiator"`
	Target          Target         `json:"target"`
	Observer        Observer       `json:"observer"`
	Reason          Reason         `json:"reason"`
	RequestData     map[string]any `json:"requestData,omitempty"`
	ResponseData    map[string]any `json:"responseData,omitempty"`
	CorrelationID   string         `json:"correlationId"`
	DataEvent       bool           `json:"dataEvent"`
	LogSourceCRN    string         `json:"logSourceCRN,omitempty"`
	SaveServiceCopy bool           `json:"saveServiceCopy"`

	// Account is the account whose Activity Tracker shows the event when the
	// target is not a CRN of that account; NewEvent sets it from the principal.
	Account string `json:"-"`
}

// Initiator is who acted.
type Initiator struct {
	ID         string     `json:"id"`
	Name       string     `json:"name,omitempty"`
	TypeURI    string     `json:"typeURI"`
	Credential Credential `json:"credential"`
	Host       Host       `json:"host"`
	AuthnID    string     `json:"authnId,omitempty"`
	AuthnName  string     `json:"authnName,omitempty"`
}

// Credential is how the initiator authenticated.
type Credential struct {
	Type string `json:"type,omitempty"`
}

// Host is where the initiator called from.
type Host struct {
	Address     string `json:"address,omitempty"`
	AddressType string `json:"addressType,omitempty"`
	Agent       string `json:"agent,omitempty"`
}

// Target is what was acted on.
type Target struct {
	ID      string `json:"id"` // a CRN
	Name    string `json:"name,omitempty"`
	TypeURI string `json:"typeURI"`
}

// Observer is always the Activity Tracker.
type Observer struct {
	Name string `json:"name"`
}

// Reason carries the HTTP status of the call and, on failure, why.
type Reason struct {
	ReasonCode       int    `json:"reasonCode"`
	ReasonType       string `json:"reasonType,omitempty"`
	ReasonForFailure string `json:"reasonForFailure,omitempty"`
}

// Outcomes.
const (
	Success = "success"
	Failure = "failure"
	Pending = "pending"
)

// Severities.
const (
	Normal   = "normal"
	Warning  = "warning"
	Critical = "critical"
)

// NewEvent starts an event for action on target, taking the initiator from
// the principal in ctx and the request from the HTTP edge. Severity follows
// Activity Tracker's rules for the action and reason code.
func NewEvent(ctx context.Context, action string, target Target, outcome string, reasonCode int) *Event {
	ev := new(Event)
	ev.Reset(ctx, action, target, outcome, reasonCode, nil)
	return ev
}

// Reset makes ev, in place, the event NewEvent would return, for a caller
// that has built the event's request data: data (which it hands over)
// becomes the event's RequestData, with the request's URI and method added
// unless it has them, rather than being copied into a map of the event's
// own. A caller that records the event at once can keep it off the heap:
// Record keeps nothing of it but its row. Every audited call builds one.
func (ev *Event) Reset(ctx context.Context, action string, target Target, outcome string, reasonCode int, data map[string]any) {
	ri := httpapi.Info(ctx)
	*ev = Event{
		Action:          action,
		Outcome:         outcome,
		Target:          target,
		Observer:        Observer{Name: "ActivityTracker"},
		Reason:          Reason{ReasonCode: reasonCode, ReasonType: reasonType(reasonCode)},
		CorrelationID:   ri.CorrelationID,
		Severity:        SeverityFor(action, reasonCode),
		Message:         messageFor(action, outcome),
		SaveServiceCopy: true,
	}
	if target.TypeURI == "" {
		ev.Target.TypeURI = typeURIFor(action)
	}
	if p := auth.FromContext(ctx); p != nil {
		ev.Account = p.AccountID
		ev.Initiator = Initiator{ID: p.IAMID, Name: p.Name, TypeURI: initiatorType(p), Credential: Credential{Type: p.CredentialType}, AuthnID: p.IAMID, AuthnName: p.Name}
	} else {
		ev.Initiator = Initiator{ID: "anonymous", TypeURI: "service/security/account/user"}
	}
	if p := auth.FromContext(ctx); p == nil || p.Type != auth.Service {
		ev.Initiator.Host = Host{Address: ri.ClientIP, AddressType: addressType(ri.ClientIP), Agent: ri.UserAgent}
	}
	if ri.URI != "" {
		if data == nil {
			data = make(map[string]any, 2)
		}
		if _, ok := data["requestURI"]; !ok {
			data["requestURI"] = ri.URI
		}
		if _, ok := data["method"]; !ok {
			data["method"] = ri.Method
		}
	}
	ev.RequestData = data
}

// SeverityFor is Activity Tracker's severity for an action and status.
func SeverityFor(action string, code int) string {
	switch code {
	case 401, 403, 503, 507:
		return Critical
	}
	switch action {
	case "kms.secrets.delete", "kms.registrations.delete", "iam-am.policy.delete":
		return Critical
	case "kms.secrets.rotate", "kms.secrets.restore", "kms.secrets.enable", "kms.secrets.disable",
		"kms.secrets.setkeyfordeletion", "kms.secrets.unsetkeyfordeletion", "kms.policies.write",
		"kms.instance-policies.write", "kms.secrets.ack-rotate", "kms.secrets.ack-delete", "kms.secrets.ack-restore",
		"kms.secrets.ack-enable", "kms.secrets.ack-disable":
		return Warning
	}
	switch code {
	case 400, 409, 424, 500, 502, 504, 505:
		return Warning
	}
	if strings.HasSuffix(action, ".delete") && strings.Contains(action, ".instance") {
		return Warning
	}
	return Normal
}

var serviceDisplay = map[string]string{
	"kms":                 "Key Protect",
	"messagehub":          "Event Streams",
	"event-streams":       "Event Streams",
	"iam-identity":        "IAM Identity Service",
	"iam-am":              "IAM Access Management",
	"is":                  "Block Storage for VPC",
	"resource-controller": "Resource Controller",
}

func messageFor(action, outcome string) string {
	// One concatenation: every audited call builds its message.
	name, rest, dotted := strings.Cut(action, ".")
	svc := serviceDisplay[name]
	if svc == "" {
		svc = name
	}
	failure := ""
	if outcome == Failure {
		failure = " -failure"
	}
	switch noun, verb, ok := strings.Cut(rest, "."); {
	case ok:
		return svc + ": " + verb + " " + noun + failure
	case dotted:
		return svc + ": " + noun + failure
	}
	return svc + ":" + failure
}

func typeURIFor(action string) string {
	parts := strings.SplitN(action, ".", 3)
	if len(parts) >= 2 {
		return parts[0] + "/" + parts[1]
	}
	return action
}

func reasonType(code int) string {
	switch {
	case code == 0:
		return ""
	case code < 300:
		return "OK"
	case code == 400:
		return "Bad Request"
	case code == 401:
		return "Unauthorized"
	case code == 403:
		return "Forbidden"
	case code == 404:
		return "Not Found"
	case code == 409:
		return "Conflict"
	case code == 410:
		return "Gone"
	case code == 422:
		return "Unprocessable Entity"
	case code >= 500:
		return "Internal Server Error"
	}
	return "Error"
}

func initiatorType(p *auth.Principal) string {
	switch p.Type {
	case auth.ServiceID:
		return "service/security/account/serviceid"
	case auth.Service:
		return "service/security/clientid"
	}
	return "service/security/account/user"
}

func addressType(ip string) string {
	switch {
	case ip == "":
		return ""
	case strings.Contains(ip, ":"):
		return "IPv6"
	}
	return "IPv4"
}

func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.00-0700")
}
