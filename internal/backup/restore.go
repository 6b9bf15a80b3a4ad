package backup

import (
	"context"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams"
)

// RestoreBackup restores backup backupID (its CRN or id) into dst, the new
// log of the deployment inst being provisioned: streams.Restorer. The
// caller in ctx must be allowed to read the backup's deployment, in the
// same account. The backup's key must be usable now: the KMS unwraps its
// data key as the identity that sealed it. Every chunk authenticates
// before the store is committed, so a truncated or modified backup fails
// with nothing left in dst.
func (s *Service) RestoreBackup(ctx context.Context, inst streams.Instance, backupID string, dst archive.Target) error {
	const op = "backup.Restore"
	p := auth.FromContext(ctx)
	b, err := s.load(ctx, op, backupID)
	if err == nil && (p == nil || b.AccountID != p.AccountID || b.AccountID != inst.AccountID) {
		err = errNoBackup(op)
	}
	if err == nil {
		if aerr := s.cfg.Authorizer.Authorize(ctx, p, auth.InstanceRead, instanceResource(b.AccountID, b.DeploymentGUID)); aerr != nil {
			err = errNoBackup(op)
			if errs.KindOf(aerr) != errs.Permission && errs.KindOf(aerr) != errs.NotExist {
				err = aerr
			}
		}
	}
	if errs.KindOf(err) == errs.NotExist {
		return errs.Ef(op, errs.Invalid, "BACKUP_NOT_FOUND", "The backup %s could not be found in this account: list the backups of a deployment with `keyline resource backups DEPLOYMENT`", backupID).On("field", streams.ParamBackupID)
	}
	if err != nil {
		return err
	}
	if b.Status != StatusCompleted {
		err := errs.Ef(op, errs.Invalid, "BACKUP_NOT_RESTORABLE", "The backup %s is %s, not completed: restore a completed backup", b.CRN, b.Status).On("field", streams.ParamBackupID)
		s.recordRestore(ctx, b, inst, err)
		return err
	}
	err = s.restore(ctx, b, dst)
	if err != nil {
		err = s.restoreError(op, b, err)
	}
	s.recordRestore(ctx, b, inst, err)
	return err
}

func (s *Service) restore(ctx context.Context, b *Backup, dst archive.Target) error {
	vol, err := OpenVolume(ctx, s.cfg.Volumes, b.DeploymentGUID)
	if err != nil {
		return err
	}
	// The key is bound to the backup id, so another backup cannot pass the
	// unwrap; it is refused all the same rather than trust that, before
	// anything is restored.
	_, err = RestoreTo(ctx, vol, b.Object, s.rootKey(b), b.ID, dst, nil)
	return err
}

// restoreError says why the restore failed, for the provisioning's caller.
func (s *Service) restoreError(op string, b *Backup, err error) error {
	if reason, code, ok := keyFailure(b, "Restoring backup "+b.CRN, err); ok {
		kind := errs.Invalid
		if code == 503 {
			kind = errs.Unavailable
		}
		return errs.E(op, kind, "BACKUP_KEY_UNUSABLE", reason+". Nothing was restored").On("field", streams.ParamBackupID).Because(err)
	}
	e := errs.As(err)
	switch {
	case e != nil && e.Kind == errs.Unprocessable:
		return errs.E(op, errs.Unprocessable, e.Code, "Backup "+b.CRN+" cannot be restored: "+e.Msg+
			". It was refused before anything was restored: restore another backup of the deployment").On("field", streams.ParamBackupID)
	case e != nil && e.Code == "OBJECT_NOT_FOUND":
		return errs.E(op, errs.Unprocessable, "BACKUP_MISSING", "Backup "+b.CRN+" cannot be restored: its data is missing from the backup volume. Restore another backup of the deployment").On("field", streams.ParamBackupID)
	}
	return err
}

// recordRestore audits a restore of b into inst.
func (s *Service) recordRestore(ctx context.Context, b *Backup, inst streams.Instance, err error) {
	code, outcome := 200, audit.Success
	if err != nil {
		code, outcome = errs.KindOf(err).Status(), audit.Failure
	}
	ev := audit.NewEvent(ctx, ActionRestore, audit.Target{ID: b.CRN, Name: b.DeploymentName, TypeURI: "event-streams/backup"}, outcome, code)
	ev.RequestData = mergeData(ev.RequestData, map[string]any{"backupId": b.CRN, "targetDeploymentId": inst.CRN, "keyCRN": b.KeyCRN})
	if err != nil {
		if e := errs.As(err); e != nil {
			ev.Reason.ReasonForFailure = e.Msg
		}
	}
	if rerr := s.audit.Record(ctx, ev); rerr != nil {
		s.log.Warn("backup: cannot record the restore", "backup", b.CRN, "err", rerr)
	}
}
