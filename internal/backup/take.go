package backup

import (
	"context"
	"io"

	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// Take writes a backup of store to the object name of vol. The object
// appears only when the whole backup was written and sealed; on any error
// nothing new is left on the volume (an older object of that name stays).
func Take(ctx context.Context, store *seglog.Store, vol volume.Volume, name string, keys archive.KeyWrapper, opts archive.WriterOptions, progress archive.Progress) (archive.Header, error) {
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
	if err := archive.RestoreDir(ctx, r, dir, opts, progress); err != nil {
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
