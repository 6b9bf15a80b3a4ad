package streams

import (
	"context"
	"os"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams/broker"
	"github.com/keyline/keyline/internal/streams/objlog"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// openLog opens a deployment's log with keys (the sealing key first): on
// local disk by default, or in the object store when one is configured.
// Exactly one of the two stores returned is set.
func (s *Service) openLog(d *deployment, keys []*seglog.DEK) (*seglog.Store, *objlog.Store, broker.Storage, error) {
	const op = "streams.openLog"
	// A log is never opened as empty where it is not: that would serve a
	// deployment without its data and fork its offsets.
	onObjects, err := objlog.Exists(context.Background(), s.db, d.guid)
	if err != nil {
		return nil, nil, nil, err
	}
	if s.cfg.ObjectStore == nil {
		if onObjects {
			return nil, nil, nil, errs.E(op, errs.Conflict, "LOG_ON_OBJECT_STORE", "its data is on object storage: start Keyline with --object-store")
		}
		st, err := seglog.Open(d.dir, seglog.Options{StoreID: d.guid, Keys: keys, Sync: true, SegmentBytes: s.cfg.SegmentBytes})
		if err != nil {
			return nil, nil, nil, err
		}
		return st, nil, broker.StorageOf(st), nil
	}
	if des, _ := os.ReadDir(d.dir); len(des) > 0 && !onObjects {
		return nil, nil, nil, errs.E(op, errs.Conflict, "LOG_ON_LOCAL_DISK", "its data is on this node's local disk, not on object storage: start Keyline without --object-store")
	}
	opts := s.cfg.ObjectLog
	opts.StoreID, opts.Keys = d.guid, keys
	ob, err := objlog.Open(context.Background(), s.db, s.cfg.ObjectStore, opts)
	if err != nil {
		return nil, nil, nil, err
	}
	return nil, ob, broker.StorageOf(ob), nil
}

// closeLog closes whichever log is open.
func (s *Service) closeLog(st *seglog.Store, ob *objlog.Store) {
	var err error
	if st != nil {
		err = st.Close()
	}
	if ob != nil {
		err = ob.Close()
	}
	if err != nil {
		s.log.Warn("streams: closing the log", "err", err)
	}
}

// destroyObjects erases a deployment's data in the object store, if one
// is configured: its objects and its rows.
func (s *Service) destroyObjects(ctx context.Context, guid string) error {
	if s.cfg.ObjectStore == nil {
		return nil
	}
	return objlog.Destroy(ctx, s.db, s.cfg.ObjectStore, guid)
}

// reencrypter is a log that re-encrypts itself under a new DEK, as
// seglog's and objlog's stores do.
type reencrypter interface {
	ReencryptTo(ctx context.Context, dek *seglog.DEK, progress func(done, total int64)) error
}

// reencrypterOf is whichever log is open, or nil.
func reencrypterOf(st *seglog.Store, ob *objlog.Store) reencrypter {
	switch {
	case ob != nil:
		return ob
	case st != nil:
		return st
	}
	return nil
}
