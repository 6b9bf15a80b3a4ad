package iam

import (
	"context"

	"github.com/keyline/keyline/internal/store"
)

// auditTargetT is the target of an IAM audit event.
type auditTargetT struct{ ID, Name, TypeURI string }

func auditTarget(id, name, typeURI string) auditTargetT { return auditTargetT{id, name, typeURI} }

// record appends the event of a state change inside its transaction.
func (s *Service) record(ctx context.Context, tx *store.Tx, action string, target auditTargetT, code int) error {
	return nil
}

// recordRead records a call that changed nothing.
func (s *Service) recordRead(ctx context.Context, action string, target auditTargetT) {}

// recordFailure records a refused or failed call.
func (s *Service) recordFailure(ctx context.Context, action string, target auditTargetT, err error) {}
