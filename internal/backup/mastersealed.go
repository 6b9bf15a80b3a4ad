package backup

import (
	"context"
	"fmt"

	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// ResealMasterBackups is a master key rotation's step over the backups of
// deployments without any key, whose data key the master key wraps in the
// archive header on the backup volume. current says whether a wrapped key
// is sealed by the current master key. With rewrap, each other backup is
// rewrapped in place (archive.Rewrap: the whole backup authenticates
// before the object is replaced) and counted; without, they are only
// counted. A master-sealed backup still running counts as not current: it
// may have wrapped its key before the rotation began.
func (s *Service) ResealMasterBackups(ctx context.Context, current func(sealed, aad []byte) bool, rewrap bool) (int, error) {
	const op = "backup.ResealMasterBackups"
	var list []Backup
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		list, err = queryBackups(tx, `sealed_by = ? AND status <> ? ORDER BY id`, sealedByMaster, StatusFailed)
		return err
	})
	if err != nil {
		return 0, errs.Internalf(op, err)
	}
	n := 0
	for i := range list {
		b := &list[i]
		if b.Status != StatusCompleted {
			n++
			continue
		}
		vol, err := OpenVolume(ctx, s.cfg.Volumes, b.DeploymentGUID)
		if err != nil {
			return n, err
		}
		obj, err := vol.Open(ctx, b.Object)
		if err != nil {
			return n, fmt.Errorf("backup %s: %w", b.CRN, err)
		}
		h, err := archive.ReadHeader(obj)
		obj.Close()
		if err != nil {
			return n, fmt.Errorf("backup %s: %w", b.CRN, err)
		}
		key := s.rootKey(b)
		if current(h.WrappedDEK.Ciphertext, key.(masterKey).aad) {
			continue
		}
		n++
		if rewrap {
			if _, err := Rewrap(ctx, vol, b.Object, key, key); err != nil {
				return n, fmt.Errorf("backup %s: %w", b.CRN, err)
			}
		}
	}
	return n, nil
}
