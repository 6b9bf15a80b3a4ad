package iam

import (
	"context"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/store"
)

// auditTarget names what an IAM event is about: a CRN, a name, a type URI.
func auditTarget(id, name, typeURI string) audit.Target {
	return audit.Target{ID: id, Name: name, TypeURI: typeURI}
}

// record appends the event of a state change inside its transaction, so the
// change and its event commit together or not at all.
func (s *Service) record(ctx context.Context, tx *store.Tx, action string, target audit.Target, code int) error {
	return s.audit.Append(tx, audit.NewEvent(ctx, action, target, audit.Success, code))
}

// recordRead records a call that changed nothing. It must not run inside a
// transaction: the audit log commits through the same single writer.
func (s *Service) recordRead(ctx context.Context, action string, target audit.Target) {
	if err := s.audit.Record(ctx, audit.NewEvent(ctx, action, target, audit.Success, 200)); err != nil {
		s.logger.Error("iam: could not record an audit event", "action", action, "err", err.Error())
	}
}

// recordFailure records a refused or failed call with its reason (never a
// secret: IAM's error messages name no key or token value).
func (s *Service) recordFailure(ctx context.Context, action string, target audit.Target, err error) {
	s.audit.Denied(ctx, action, target, err)
}
