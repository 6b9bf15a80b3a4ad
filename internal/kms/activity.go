package kms

import (
	"context"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/store"
)

// ActivityTracker is the Auditor that writes to Keyline's Activity Tracker.
func ActivityTracker(log *audit.Log) Auditor { return activityTracker{log} }

type activityTracker struct{ log *audit.Log }

// event makes e the Activity Tracker's event for ev.
func (a activityTracker) event(ctx context.Context, ev AuditEvent, e *audit.Event) *audit.Event {
	data := ev.RequestData
	if data == nil {
		data = map[string]any{}
	}
	e.Reset(ctx, ev.Action, audit.Target{ID: ev.TargetID, Name: ev.TargetName, TypeURI: ev.TargetType}, ev.Outcome, ev.ReasonCode, data)
	if len(ev.ResponseData) > 0 {
		e.ResponseData = ev.ResponseData
	}
	e.Reason.ReasonForFailure = ev.Reason
	return e
}

func (a activityTracker) Append(ctx context.Context, tx *store.Tx, ev AuditEvent) error {
	return a.log.Append(tx, a.event(ctx, ev, new(audit.Event)))
}

func (a activityTracker) Record(ctx context.Context, ev AuditEvent) error {
	// On the stack: Record keeps only the event's row, and every wrap and
	// unwrap records one.
	var e audit.Event
	return a.log.Record(ctx, a.event(ctx, ev, &e))
}
