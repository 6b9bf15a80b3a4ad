// Package volume is where backups are kept: a flat namespace of immutable
// objects behind one interface, with a backend per kind of storage (a local
// directory, an S3-compatible bucket) chosen by configuration.
package volume

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/errs"
)

// Volume is a deployment's backup storage.
type Volume interface {
	// Create starts a new object. It becomes visible (to Open, Stat and
	// List) only when Close returns nil, and then whole: a directory writes
	// a temporary file and renames it, a bucket completes a multipart
	// upload. A writer that is abandoned (Abort, or ctx canceled before
	// Close) leaves nothing behind and keeps any older object of that name.
	Create(ctx context.Context, name string) (io.WriteCloser, error)
	// Open streams an object; errs.NotExist when there is none.
	Open(ctx context.Context, name string) (io.ReadCloser, error)
	// Stat describes an object; errs.NotExist when there is none.
	Stat(ctx context.Context, name string) (Info, error)
	// List returns the objects whose names start with prefix, sorted by name.
	List(ctx context.Context, prefix string) ([]Info, error)
	// Delete removes an object. Deleting a missing object is not an error,
	// so a retried delete succeeds.
	Delete(ctx context.Context, name string) error
}

// Info describes a stored object.
type Info struct {
	Name     string
	Size     int64
	Modified time.Time
}

// Aborter is implemented by the writers Create returns: Abort discards the
// object being written. Close after Abort fails.
type Aborter interface {
	Abort()
}

// Abort discards w when it supports it (every Volume's writers do).
func Abort(w io.WriteCloser) {
	if a, ok := w.(Aborter); ok {
		a.Abort()
	}
}

// MaxNameLen bounds object names (S3 allows 1024 bytes of key, and a
// deployment prefix comes before the name).
const MaxNameLen = 512

// CheckName validates an object name: segments of letters, digits, '.',
// '_' and '-' separated by '/', none empty, "." or "..", and none starting
// with '.' (those are the backends' temporary files). The rule is the same
// for every backend, so a name valid on one is valid on all.
func CheckName(op, name string) error {
	if err := checkPath(name); err != "" {
		return errs.E(op, errs.Invalid, "OBJECT_NAME_INVALID", "The object name "+err).On("field", "name")
	}
	return nil
}

// CheckPrefix validates a List prefix: empty, or a name (the last segment
// may be partial but not start with '.').
func CheckPrefix(op, prefix string) error {
	if prefix == "" {
		return nil
	}
	p := strings.TrimSuffix(prefix, "/")
	if p == "" {
		return errs.E(op, errs.Invalid, "PREFIX_INVALID", "The prefix must not start with '/'").On("query_param", "prefix")
	}
	if err := checkPath(p); err != "" {
		return errs.E(op, errs.Invalid, "PREFIX_INVALID", "The prefix "+err).On("query_param", "prefix")
	}
	return nil
}

func checkPath(name string) string {
	if name == "" || len(name) > MaxNameLen {
		return "must be 1 to 512 bytes long"
	}
	for seg := range strings.SplitSeq(name, "/") {
		if seg == "" || seg[0] == '.' {
			return "has an empty segment or one starting with '.'"
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
				return "may hold only letters, digits, '.', '_', '-' and '/'"
			}
		}
	}
	return ""
}

// NotFound is the error for a missing object.
func NotFound(op string) error {
	return errs.E(op, errs.NotExist, "OBJECT_NOT_FOUND", "The backup object does not exist")
}

// Aborted is the error Close returns after Abort or a canceled context.
func Aborted(op string, cause error) error {
	return errs.E(op, errs.Conflict, "OBJECT_ABORTED", "The backup object was abandoned before it was complete").Because(cause)
}
