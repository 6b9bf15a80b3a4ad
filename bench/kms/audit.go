package main

import (
	"context"
	"fmt"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/store"
)

// discardAuditor measures the KMS alone, without the audit trail's cost.
type discardAuditor struct{}

func (discardAuditor) Append(context.Context, *store.Tx, kms.AuditEvent) error { return nil }
func (discardAuditor) Record(context.Context, kms.AuditEvent) error            { return nil }

// newAuditor returns the audit trail the bench runs with (and the
// Activity Tracker's log, nil with "none").
func newAuditor(ctx context.Context, db *store.DB, kind string) (kms.Auditor, *audit.Log, error) {
	switch kind {
	case "at":
		l, err := audit.New(ctx, db, clock.Real{}, nil)
		if err != nil {
			return nil, nil, err
		}
		return kms.ActivityTracker(l), l, nil
	case "none":
		return discardAuditor{}, nil, nil
	}
	return nil, nil, fmt.Errorf("unknown -audit %q (at, none)", kind)
}
