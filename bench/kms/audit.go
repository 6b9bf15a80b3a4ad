package main

import (
	"context"
	"fmt"

	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/kms/kmstest"
	"github.com/keyline/keyline/internal/store"
)

// namedAuditor is the audit trail the bench runs with.
type namedAuditor interface {
	kms.Auditor
	name() string
}

type tableAuditor struct{ *kmstest.Audit }

func (tableAuditor) name() string { return "table (one transaction per read event)" }

// discardAuditor measures the KMS alone, without the audit trail's cost.
type discardAuditor struct{}

func (discardAuditor) Append(context.Context, *store.Tx, kms.AuditEvent) error { return nil }
func (discardAuditor) Record(context.Context, kms.AuditEvent) error            { return nil }
func (discardAuditor) name() string                                            { return "none (KMS cost only)" }

func newAuditor(ctx context.Context, db *store.DB, kind string) (namedAuditor, error) {
	switch kind {
	case "table":
		a, err := kmstest.NewAudit(ctx, db)
		return tableAuditor{a}, err
	case "none":
		return discardAuditor{}, nil
	}
	return nil, fmt.Errorf("unknown -audit %q (table, none)", kind)
}
