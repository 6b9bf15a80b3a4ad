package streams

import (
	"context"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// Provision parameters of backups.
const (
	// ParamBackupID names a backup (its CRN or id) to restore into the new
	// deployment.
	ParamBackupID = "backup_id"
	// ParamBackupSchedule is the hours between scheduled backups (1 to 168;
	// daily when absent).
	ParamBackupSchedule = "backup_schedule"
)

// Restorer writes a backup into a new deployment's log while it is
// provisioned. The backup service implements it; ctx carries the caller,
// who must be allowed to read the backup's deployment.
type Restorer interface {
	// RestoreBackup restores backupID as a new store at dir, opened with
	// opts (the new deployment's own DEK). dir appears only when the whole
	// backup was read and authenticated; on error nothing is left there.
	RestoreBackup(ctx context.Context, inst Instance, backupID, dir string, opts seglog.Options) error
}

// ReadLog runs f on the deployment's open log (a backup snapshots it).
// A locked or suspended deployment's log is closed: Conflict, saying why.
// If the deployment locks while f runs, f's reads fail and so does f.
func (s *Service) ReadLog(ctx context.Context, guid string, f func(*seglog.Store) error) error {
	const op = "streams.ReadLog"
	d, err := s.get(op, guid)
	if err != nil {
		return err
	}
	d.mu.Lock()
	st, obj, lock := d.st, d.obj, d.lock
	d.mu.Unlock()
	if obj != nil {
		return objectStoreUnsupported(op, "A backup")
	}
	if st == nil {
		if lock == "" {
			lock = "the deployment is suspended or stopped"
		}
		return errs.E(op, errs.Conflict, "DEPLOYMENT_LOCKED", lock)
	}
	return f(st)
}
