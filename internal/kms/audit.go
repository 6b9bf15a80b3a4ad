package kms

import (
	"context"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// AuditEvent is what the KMS tells the Activity Tracker about one call. It
// never holds key material, plaintext or tokens.
type AuditEvent struct {
	Action       string // a Key Protect AT action, e.g. "kms.secrets.wrap"
	TargetID     string // CRN of the key or instance
	TargetName   string
	TargetType   string // "kms/secret", "kms/instance", ...
	Outcome      string // "success" | "failure"
	ReasonCode   int    // HTTP-style status
	Reason       string // reasonForFailure, for failures
	RequestData  map[string]any
	ResponseData map[string]any
}

// Auditor is the Activity Tracker as the KMS uses it. Append writes the
// event in the same transaction as the state change it records, so a crash
// can never leave one without the other; Record is for calls that change
// nothing (reads, wrap/unwrap, denials) and is durable on return; it keeps
// nothing of ev's maps once it returns (wrap and unwrap reuse them). ctx
// carries the initiator (auth.FromContext) and the request (httpapi.Info).
type Auditor interface {
	Append(ctx context.Context, tx *store.Tx, ev AuditEvent) error
	Record(ctx context.Context, ev AuditEvent) error
}

const (
	typeKey      = "kms/secret"
	typeInstance = "kms/instance"
)

// success builds the event of a successful call on target.
func success(action string, t target) AuditEvent {
	return successWith(action, t, map[string]any{}, map[string]any{})
}

// successWith is success with the maps for the event's data.
func successWith(action string, t target, request, response map[string]any) AuditEvent {
	return AuditEvent{Action: action, TargetID: t.crn, TargetName: t.name, TargetType: t.typ, Outcome: "success", ReasonCode: 200,
		RequestData: request, ResponseData: response}
}

// target is what an event is about.
type target struct{ crn, name, typ string }

func instanceTarget(in Instance) target { return target{crn: in.CRN, name: in.GUID, typ: typeInstance} }

// recordFailure records a refused or failed call; the call's own error is
// what the caller sees, so a failure to record is only logged.
func (s *Service) recordFailure(ctx context.Context, action string, t target, err error) {
	ev := success(action, t)
	ev.Outcome = "failure"
	ev.ReasonCode = errs.KindOf(err).Status()
	if e := errs.As(err); e != nil {
		ev.Reason = e.Msg
		if e.Code != "" {
			ev.ResponseData["reasonCode"] = e.Code
		}
	}
	if rerr := s.audit.Record(ctx, ev); rerr != nil {
		s.log.Error("kms: recording audit event", "action", action, "err", rerr)
	}
}

// record records a call that changed nothing.
func (s *Service) record(ctx context.Context, ev AuditEvent) error {
	if err := s.audit.Record(ctx, ev); err != nil {
		return errs.E("kms.audit", errs.Unavailable, "AUDIT_UNAVAILABLE_ERR", "The activity could not be recorded").Because(err)
	}
	return nil
}

// RecordRefusal records a call refused at the API edge before it reached the
// service (no or bad credentials), so that it too leaves an event.
func (s *Service) RecordRefusal(ctx context.Context, action, instanceGUID string, err error) {
	t := target{name: instanceGUID, typ: typeInstance}
	if in, ok, _ := s.findInstance(ctx, instanceGUID); ok {
		t.crn = in.CRN
	}
	s.recordFailure(ctx, action, t, err)
}
