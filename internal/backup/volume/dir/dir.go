// Package dir keeps a backup volume in a local directory: one file per
// object, written to a temporary file and renamed into place once synced.
package dir

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/durable"
	"github.com/keyline/keyline/internal/errs"
)

// tempPrefix starts the names of files being written; CheckName refuses
// names starting with '.', so no object can collide with one.
const tempPrefix = ".tmp-"

// Volume is a directory of objects.
type Volume struct {
	root string
}

var _ volume.Volume = (*Volume)(nil)

// New opens (creating it when needed, mode 0700) the directory root as a
// volume. Temporary files a crash left behind are removed.
func New(root string) (*Volume, error) {
	const op = "backup/volume/dir.New"
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, errs.Internalf(op, err)
	}
	v := &Volume{root: root}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasPrefix(d.Name(), tempPrefix) {
			err = os.Remove(path)
		}
		return err
	})
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	return v, nil
}

func (v *Volume) path(name string) string { return filepath.Join(v.root, filepath.FromSlash(name)) }

// Create implements volume.Volume.
func (v *Volume) Create(ctx context.Context, name string) (io.WriteCloser, error) {
	const op = "backup/volume/dir.Create"
	if err := volume.CheckName(op, name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, volume.Aborted(op, err)
	}
	final := v.path(name)
	if st, err := os.Lstat(final); err == nil && st.IsDir() {
		return nil, nameConflict(op)
	}
	if err := v.mkdirs(filepath.Dir(final)); err != nil {
		if errors.Is(err, syscall.ENOTDIR) {
			return nil, nameConflict(op)
		}
		return nil, errs.Internalf(op, err)
	}
	f, err := os.CreateTemp(filepath.Dir(final), tempPrefix)
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	return &writer{ctx: ctx, f: f, final: final}, nil
}

// nameConflict: a directory cannot hold both "a" and "a/b" (a bucket can);
// names of backups never nest that way.
func nameConflict(op string) error {
	return errs.E(op, errs.Conflict, "OBJECT_NAME_CONFLICT", "An object name is a prefix of another's, which a directory volume cannot hold").On("field", "name")
}

// mkdirs creates dir and its missing parents below the root, syncing each
// parent so the new entries survive a crash with the object.
func (v *Volume) mkdirs(dir string) error {
	rel, err := filepath.Rel(v.root, dir)
	if err != nil || rel == "." {
		return err
	}
	cur := v.root
	for seg := range strings.SplitSeq(rel, string(filepath.Separator)) {
		next := filepath.Join(cur, seg)
		err := os.Mkdir(next, 0o700)
		if err == nil {
			err = durable.SyncDir(cur)
		} else if errors.Is(err, fs.ErrExist) {
			if st, serr := os.Stat(next); serr == nil && !st.IsDir() {
				return syscall.ENOTDIR
			}
			err = nil
		}
		if err != nil {
			return err
		}
		cur = next
	}
	return nil
}

type writer struct {
	ctx     context.Context
	f       *os.File
	final   string
	mu      sync.Mutex
	done    bool
	err     error // first write error: Close then discards the object
	written int64
	flushed int64 // bytes handed to durable.StartWriteback
}

// writebackStep is how much is written before the kernel is asked to
// write it back.
const writebackStep = 8 << 20

func (w *writer) Write(p []byte) (int, error) {
	const op = "backup/volume/dir.Write"
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return 0, volume.Aborted(op, nil)
	}
	if w.err != nil {
		return 0, w.err
	}
	n, err := w.f.Write(p)
	w.written += int64(n)
	if err != nil {
		w.err = errs.Internalf(op, err)
		return n, w.err
	}
	if w.written-w.flushed >= writebackStep {
		durable.StartWriteback(w.f, w.flushed, w.written-w.flushed)
		w.flushed = w.written
	}
	return n, nil
}

// Close syncs the file, renames it into place and syncs the directory.
func (w *writer) Close() error {
	const op = "backup/volume/dir.Close"
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return volume.Aborted(op, nil)
	}
	w.done = true
	tmp := w.f.Name()
	err := w.err
	if err == nil {
		if cerr := w.ctx.Err(); cerr != nil {
			err = volume.Aborted(op, cerr)
		}
	}
	if err == nil {
		err = w.f.Sync()
	}
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, w.final)
	}
	if err == nil {
		err = durable.SyncDir(filepath.Dir(w.final))
	}
	if err != nil {
		os.Remove(tmp)
		if errs.As(err) == nil {
			err = errs.Internalf(op, err)
		}
		return err
	}
	return nil
}

func (w *writer) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.done = true
		w.f.Close()
		os.Remove(w.f.Name())
	}
}

// Open implements volume.Volume.
func (v *Volume) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	const op = "backup/volume/dir.Open"
	if err := volume.CheckName(op, name); err != nil {
		return nil, err
	}
	f, err := os.Open(v.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, volume.NotFound(op)
	}
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	if st, err := f.Stat(); err != nil || !st.Mode().IsRegular() {
		f.Close()
		return nil, volume.NotFound(op)
	}
	return f, nil
}

// Stat implements volume.Volume.
func (v *Volume) Stat(ctx context.Context, name string) (volume.Info, error) {
	const op = "backup/volume/dir.Stat"
	if err := volume.CheckName(op, name); err != nil {
		return volume.Info{}, err
	}
	st, err := os.Stat(v.path(name))
	if errors.Is(err, fs.ErrNotExist) || err == nil && !st.Mode().IsRegular() {
		return volume.Info{}, volume.NotFound(op)
	}
	if err != nil {
		return volume.Info{}, errs.Internalf(op, err)
	}
	return volume.Info{Name: name, Size: st.Size(), Modified: st.ModTime().UTC()}, nil
}

// List implements volume.Volume.
func (v *Volume) List(ctx context.Context, prefix string) ([]volume.Info, error) {
	const op = "backup/volume/dir.List"
	if err := volume.CheckPrefix(op, prefix); err != nil {
		return nil, err
	}
	var out []volume.Info
	err := filepath.WalkDir(v.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if path == v.root {
			return nil
		}
		rel, err := filepath.Rel(v.root, path)
		if err != nil {
			return err
		}
		name := filepath.ToSlash(rel)
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			// Descend only where names with the prefix can be.
			if dirName := name + "/"; !strings.HasPrefix(dirName, prefix) && !strings.HasPrefix(prefix, dirName) {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || !strings.HasPrefix(name, prefix) {
			return nil
		}
		st, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) { // deleted while listing
			return nil
		}
		if err != nil {
			return err
		}
		out = append(out, volume.Info{Name: name, Size: st.Size(), Modified: st.ModTime().UTC()})
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, errs.E(op, errs.Unavailable, "CANCELED", "The listing was canceled").Because(err)
		}
		return nil, errs.Internalf(op, err)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete implements volume.Volume.
func (v *Volume) Delete(ctx context.Context, name string) error {
	const op = "backup/volume/dir.Delete"
	if err := volume.CheckName(op, name); err != nil {
		return err
	}
	p := v.path(name)
	if st, err := os.Lstat(p); err == nil && st.IsDir() {
		return nil // a directory is not an object: nothing to delete
	}
	err := os.Remove(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = durable.SyncDir(filepath.Dir(p))
	}
	if err != nil {
		return errs.Internalf(op, err)
	}
	return nil
}
