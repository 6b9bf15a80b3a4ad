package backup

import (
	"context"
	"io"

	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// Take writes a backup of store (seglog's or objlog's) to the object name
// of vol. The object appears only when the whole backup was written and
// sealed; on any error nothing new is left on the volume (an older object
// of that name stays).
func Take[P archive.PartitionLog](ctx context.Context, store archive.LogStore[P], vol volume.Volume, name string, keys archive.KeyWrapper, opts archive.WriterOptions, progress archive.Progress) (archive.Header, error) {
	obj, err := vol.Create(ctx, name)
	if err != nil {
		return archive.Header{}, err
	}
	w, err := archive.NewWriter(ctx, obj, keys, opts)
	if err != nil {
		volume.Abort(obj)
		return archive.Header{}, err
	}
	if err := archive.Snapshot(ctx, store, w, progress); err != nil {
		w.Abort()
		volume.Abort(obj)
		return archive.Header{}, err
	}
	if err := w.Close(); err != nil {
		volume.Abort(obj)
		return archive.Header{}, err
	}
	if err := obj.Close(); err != nil {
		return archive.Header{}, err
	}
	return w.Header(), nil
}

// RestoreInto restores the backup in the object name of vol as a new store
// at dir (opened with opts: the new deployment's own DEK). dir appears only
// when the whole backup was read and authenticated.
func RestoreInto(ctx context.Context, vol volume.Volume, name string, keys archive.KeyWrapper, dir string, opts seglog.Options, progress archive.Progress) (archive.Header, error) {
	return RestoreTo(ctx, vol, name, keys, "", archive.DirTarget{Dir: dir, Options: opts}, progress)
}

// RestoreTo restores the backup in the object name of vol into dst, a new
// log (sealed under the new deployment's own DEK), which is kept only when
// the whole backup was read and authenticated. With a backupID, a backup
// object that holds another backup is refused before anything is restored.
func RestoreTo(ctx context.Context, vol volume.Volume, name string, keys archive.KeyWrapper, backupID string, dst archive.Target, progress archive.Progress) (archive.Header, error) {
	obj, err := vol.Open(ctx, name)
	if err != nil {
		return archive.Header{}, err
	}
	defer obj.Close()
	r, err := archive.NewReader(ctx, obj, keys)
	if err != nil {
		return archive.Header{}, err
	}
	defer r.Close()
	if backupID != "" && r.Header().BackupID != backupID {
		return archive.Header{}, errs.E("backup.Restore", errs.Unprocessable, "BACKUP_MODIFIED", "The backup object holds another backup")
	}
	if err := dst.Fill(ctx, func(l archive.Log) error { return archive.Restore(ctx, r, l, progress) }); err != nil {
		return archive.Header{}, err
	}
	return r.Header(), nil
}

// Rewrap replaces the object name of vol with the same backup, its DEK
// wrapped by to instead of from (after a root key rotation). The object is
// replaced only when the whole backup authenticated and was copied; until
// then the old one stays.
func Rewrap(ctx context.Context, vol volume.Volume, name string, from, to archive.KeyWrapper) (archive.Header, error) {
	src, err := vol.Open(ctx, name)
	if err != nil {
		return archive.Header{}, err
	}
	defer src.Close()
	dst, err := vol.Create(ctx, name)
	if err != nil {
		return archive.Header{}, err
	}
	h, err := archive.Rewrap(ctx, src, dst, from, to)
	if err != nil {
		volume.Abort(dst)
		return archive.Header{}, err
	}
	if err := dst.Close(); err != nil {
		return archive.Header{}, err
	}
	return h, nil
}

// Verify reads the whole backup in the object name of vol and checks that
// it authenticates to its end and holds what its contents promise,
// without restoring anything.
func Verify(ctx context.Context, vol volume.Volume, name string, keys archive.KeyWrapper) (archive.Header, archive.Contents, error) {
	obj, err := vol.Open(ctx, name)
	if err != nil {
		return archive.Header{}, archive.Contents{}, err
	}
	defer obj.Close()
	r, err := archive.NewReader(ctx, obj, keys)
	if err != nil {
		return archive.Header{}, archive.Contents{}, err
	}
	defer r.Close()
	for {
		if err := ctx.Err(); err != nil {
			return archive.Header{}, archive.Contents{}, errs.E("backup.Verify", errs.Unavailable, "CANCELED", "The verification was canceled").Because(err)
		}
		if _, err := r.Next(); err == io.EOF {
			return r.Header(), r.Contents(), nil
		} else if err != nil {
			return archive.Header{}, archive.Contents{}, err
		}
	}
}
