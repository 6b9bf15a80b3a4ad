package streams

import (
	"context"

	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams/objlog"
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
	// RestoreBackup restores backupID into dst, the new deployment's log
	// (sealed under its own DEK), which is kept only when the whole backup
	// was read and authenticated; on error nothing is left there.
	RestoreBackup(ctx context.Context, inst Instance, backupID string, dst archive.Target) error
}

// restoreTarget is where a restore writes the new deployment d's log,
// sealed under keys: a store at its directory, or on object storage.
func (s *Service) restoreTarget(d *deployment, keys []*seglog.DEK) archive.Target {
	if s.cfg.ObjectStore == nil {
		return archive.DirTarget{Dir: d.dir, Options: seglog.Options{StoreID: d.guid, Keys: keys, Sync: true, SegmentBytes: s.cfg.SegmentBytes}}
	}
	opts := s.cfg.ObjectLog
	opts.StoreID, opts.Keys = d.guid, keys
	return objectTarget{s: s, opts: opts}
}

// objectTarget is a new deployment's log on object storage, filled by a
// restore: a store left by a restore that died with its process is erased
// first, and the store is erased again if the restore fails.
type objectTarget struct {
	s    *Service
	opts objlog.Options
}

func (t objectTarget) Fill(ctx context.Context, restore func(archive.Log) error) error {
	if err := t.s.destroyObjects(ctx, t.opts.StoreID); err != nil {
		return err
	}
	ob, err := objlog.Open(ctx, t.s.db, t.s.cfg.ObjectStore, t.opts)
	if err == nil {
		err = restore(archive.LogOf(ob))
		// Restore returns once every batch is durable: Close loses nothing.
		ob.Close()
	}
	if err != nil {
		if derr := t.s.destroyObjects(context.WithoutCancel(ctx), t.opts.StoreID); derr != nil {
			t.s.log.Warn("streams: erasing a failed restore", "deployment", t.opts.StoreID, "err", derr)
		}
		return err
	}
	return nil
}

// ReadLog runs f on the deployment's open log (a backup snapshots it).
// A locked or suspended deployment's log is closed: Conflict, saying why.
// If the deployment locks while f runs, f's reads fail and so does f.
func (s *Service) ReadLog(ctx context.Context, guid string, f func(archive.Log) error) error {
	const op = "streams.ReadLog"
	d, err := s.get(op, guid)
	if err != nil {
		return err
	}
	d.mu.Lock()
	st, obj, view, lock := d.st, d.obj, d.view, d.lock
	d.mu.Unlock()
	switch {
	case obj != nil:
		return f(archive.LogOf(obj))
	case st != nil:
		return f(archive.LogOf(st))
	case view != nil:
		return s.readSnapshot(ctx, d, f)
	}
	if lock == "" {
		lock = "the deployment is suspended or stopped"
	}
	return errs.E(op, errs.Conflict, "DEPLOYMENT_LOCKED", lock)
}

// readSnapshot runs f on a read-only snapshot of a deployment on object
// storage that another node leads (a backup taken here): the log as its
// leader had committed it when the snapshot opened. Its DEKs are
// unwrapped for the snapshot alone and wiped after.
func (s *Service) readSnapshot(ctx context.Context, d *deployment, f func(archive.Log) error) error {
	rec, _, _ := d.snapshot()
	var keys []*seglog.DEK
	defer func() { wipeAll(keys...) }()
	for _, k := range []struct {
		id      string
		wrapped []byte
	}{{rec.NextDEKID, rec.NextWrappedDEK}, {rec.DEKID, rec.WrappedDEK}} {
		if k.id == "" {
			continue
		}
		dek, err := s.unwrapDEK(ctx, d, k.id, k.wrapped)
		if err != nil {
			return err
		}
		keys = append(keys, dek)
	}
	opts := s.cfg.ObjectLog
	opts.StoreID, opts.Keys, opts.ReadOnly = d.guid, keys, true
	ob, err := objlog.Open(ctx, s.db, s.cfg.ObjectStore, opts)
	if err != nil {
		return err
	}
	defer ob.Close()
	return f(archive.LogOf(ob))
}
