package kms

import (
	"context"
	"regexp"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// KeyRing groups keys of an instance.
type KeyRing struct {
	ID           string     `json:"id"`
	CreationDate *time.Time `json:"creationDate,omitempty"`
	CreatedBy    string     `json:"createdBy,omitempty"`
}

var ringRE = regexp.MustCompile(`^[A-Za-z0-9-]{2,100}$`)

// ListKeyRings lists the instance's key rings ("default" first).
func (s *Service) ListKeyRings(ctx context.Context, guid string, limit, offset int) ([]KeyRing, int, error) {
	const op = "kms.ListKeyRings"
	var all []KeyRing
	err := s.onInstance(ctx, op, guid, auth.KMSKeyRingList, false, func(tx *store.Tx, in Instance, ev *AuditEvent) error {
		rows, err := tx.Query(`SELECT id, created_by, creation_date FROM kms_key_rings WHERE instance_guid = ?
			ORDER BY id <> 'default', creation_date, id`, in.GUID)
		if err != nil {
			return errs.Internalf(op, err)
		}
		defer rows.Close()
		for rows.Next() {
			var r KeyRing
			var created string
			if err := rows.Scan(&r.ID, &r.CreatedBy, &created); err != nil {
				return errs.Internalf(op, err)
			}
			if r.ID != "default" {
				r.CreationDate = timePtr(created)
			}
			all = append(all, r)
		}
		return rows.Err()
	})
	return page(all, limit, offset), len(all), err
}

// CreateKeyRing adds a key ring to the instance.
func (s *Service) CreateKeyRing(ctx context.Context, guid, id string) error {
	const op = "kms.CreateKeyRing"
	return s.onInstance(ctx, op, guid, auth.KMSKeyRingCreate, true, func(tx *store.Tx, in Instance, ev *AuditEvent) error {
		ev.RequestData["keyRingId"] = id
		if !ringRE.MatchString(id) {
			return errs.E(op, errs.Invalid, "INVALID_PATH_PARAM_ERR", "The key ring id must be 2 to 100 letters, digits or '-'").On("field", "keyRingID")
		}
		_, err := tx.Exec(`INSERT INTO kms_key_rings (instance_guid, id, created_by, creation_date) VALUES (?, ?, ?, ?)`,
			in.GUID, id, principalID(ctx), store.Time(s.clock.Now()))
		if store.IsUnique(err) {
			return errs.E(op, errs.Conflict, "KEY_RING_CONFLICT_ERR", "A key ring with this id already exists")
		}
		if err != nil {
			return errs.Internalf(op, err)
		}
		return nil
	})
}

// DeleteKeyRing removes an empty key ring. With force, a ring that holds
// only destroyed keys is removed and those keys move to "default".
func (s *Service) DeleteKeyRing(ctx context.Context, guid, id string, force bool) error {
	const op = "kms.DeleteKeyRing"
	return s.onInstance(ctx, op, guid, auth.KMSKeyRingDelete, true, func(tx *store.Tx, in Instance, ev *AuditEvent) error {
		ev.RequestData["keyRingId"] = id
		if id == "default" {
			return errs.E(op, errs.Invalid, "KEY_RING_DEFAULT_ERR", "The default key ring cannot be deleted")
		}
		var live, destroyed int
		if err := tx.QueryRow(`SELECT COUNT(CASE WHEN state <> 5 THEN 1 END), COUNT(CASE WHEN state = 5 THEN 1 END) FROM kms_keys WHERE instance_guid = ? AND key_ring = ?`,
			in.GUID, id).Scan(&live, &destroyed); err != nil {
			return errs.Internalf(op, err)
		}
		if live > 0 || (destroyed > 0 && !force) {
			return errs.E(op, errs.Conflict, "KEY_RING_NOT_EMPTY_ERR", "The key ring holds keys: move or delete them first (destroyed keys move with force=true)")
		}
		res, err := tx.Exec(`DELETE FROM kms_key_rings WHERE instance_guid = ? AND id = ?`, in.GUID, id)
		if err != nil {
			return errs.Internalf(op, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.E(op, errs.NotExist, "KEY_RING_NOT_FOUND_ERR", "The key ring does not exist")
		}
		if _, err := tx.Exec(`UPDATE kms_keys SET key_ring = 'default' WHERE instance_guid = ? AND key_ring = ?`, in.GUID, id); err != nil {
			return errs.Internalf(op, err)
		}
		return nil
	})
}
