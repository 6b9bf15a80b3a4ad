package kms

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// RotateInput is new material for an imported root key (empty for a
// generated one).
type RotateInput struct {
	Payload             string
	EncryptedNonce      string
	IV                  string
	EncryptionAlgorithm string
}

// Rotate adds a new version to a root key; wrap uses it from now on and
// every older version keeps unwrapping. Registered services are notified.
func (s *Service) Rotate(ctx context.Context, guid, idOrAlias string, in RotateInput) error {
	const op = "kms.Rotate"
	return s.onKey(ctx, op, guid, idOrAlias, auth.KMSKeyRotate, true, func(c *keyCall) error {
		k := c.key
		if k.Extractable {
			return errRootRequired(op)
		}
		if err := rotatableState(op, k, c.now); err != nil {
			return err
		}
		if k.LastRotate != "" && c.now.Sub(store.ParseTime(k.LastRotate)) < RotationMinInterval {
			return errs.E(op, errs.Conflict, "KEY_ROTATION_NOT_PERMITTED",
				"This root key has been rotated within the last hour. Only one 'rotate' action per hour is permitted")
		}
		var material []byte
		var err error
		switch {
		case !k.Imported && in.Payload != "":
			return errs.E(op, errs.Invalid, "INVALID_QUERY_PARAM_ERR", "The query_param 'payload' must be: provided only if key is imported").On("query_param", "payload")
		case !k.Imported:
			material = seal.RandomKey()
		case in.Payload == "":
			return errs.E(op, errs.Invalid, "KEY_PAYLOAD_REQ_ERR",
				"This root key was created with user-supplied key material: Key material is required to perform a 'rotate' action")
		case in.EncryptedNonce != "" || in.IV != "":
			material, err = s.importWithToken(c.tx, op, c.in.GUID, in.Payload, in.EncryptedNonce, in.IV, in.EncryptionAlgorithm, false)
		default:
			material, err = decodeMaterial(op, in.Payload, false)
		}
		if err != nil {
			return err
		}
		defer seal.Wipe(material)
		return s.rotate(c, material)
	})
}

func rotatableState(op string, k *keyRow, now time.Time) error {
	switch k.effectiveState(now) {
	case StateDestroyed:
		return errDeleted(op)
	case StateActive, StateDeactivated:
		return nil
	}
	return errInvalidState(op)
}

// rotate stores material as the key's new latest version, in c's transaction.
func (s *Service) rotate(c *keyCall, material []byte) error {
	const op = "kms.rotate"
	var seq int
	if err := c.tx.QueryRow(`SELECT COALESCE(MAX(seq), 0) FROM kms_key_versions WHERE key_id = ?`, c.key.ID).Scan(&seq); err != nil {
		return errs.Internalf(op, err)
	}
	vid := uuid.NewString()
	if err := s.insertVersion(c.tx, c.key.ID, vid, seq+1, material, c.now); err != nil {
		return err
	}
	now := store.Time(c.now)
	if _, err := c.tx.Exec(`UPDATE kms_keys SET latest_version = ?, last_rotate_date = ?, last_update_date = ? WHERE id = ?`,
		vid, now, now, c.key.ID); err != nil {
		return errs.Internalf(op, err)
	}
	c.key.LatestVersion, c.key.LatestVersionDate, c.key.LastRotate, c.key.LastUpdate = vid, now, now, now
	c.ev.ResponseData["keyVersionId"] = vid
	c.ev.ResponseData["keyVersionCreationDate"] = now
	c.ev.ResponseData["keyState"] = c.key.effectiveState(c.now)
	return s.raiseEvent(c, EventRotate)
}

// setState moves a key to state and notifies registered services with event.
func (s *Service) setState(c *keyCall, state int, event string) error {
	now := store.Time(c.now)
	if _, err := c.tx.Exec(`UPDATE kms_keys SET state = ?, last_update_date = ? WHERE id = ?`, state, now, c.key.ID); err != nil {
		return errs.Internalf("kms.setState", err)
	}
	c.key.State, c.key.LastUpdate = state, now
	c.ev.ResponseData["keyState"] = state
	return s.raiseEvent(c, event)
}

// DisableKey suspends an active root key: it can no longer wrap or unwrap.
func (s *Service) DisableKey(ctx context.Context, guid, idOrAlias string) error {
	const op = "kms.DisableKey"
	return s.onKey(ctx, op, guid, idOrAlias, auth.KMSKeyDisable, true, func(c *keyCall) error {
		if c.key.Extractable {
			return errRootRequired(op)
		}
		switch c.key.effectiveState(c.now) {
		case StateDestroyed:
			return errDeleted(op)
		case StateActive:
			return s.setState(c, StateSuspended, EventDisable)
		}
		return errInvalidState(op)
	})
}

// EnableKey makes a suspended root key active again.
func (s *Service) EnableKey(ctx context.Context, guid, idOrAlias string) error {
	const op = "kms.EnableKey"
	return s.onKey(ctx, op, guid, idOrAlias, auth.KMSKeyEnable, true, func(c *keyCall) error {
		if c.key.Extractable {
			return errRootRequired(op)
		}
		switch c.key.effectiveState(c.now) {
		case StateDestroyed:
			return errDeleted(op)
		case StateDeactivated:
			return errs.E(op, errs.Conflict, "KEY_ACTION_INVALID_STATE_ERR", "Key is not in a valid state: an expired key cannot be enabled")
		case StateSuspended:
			return s.setState(c, StateActive, EventEnable)
		}
		return errInvalidState(op)
	})
}

// DeleteKey destroys a key: its material becomes unusable at once. A key
// protecting registered resources needs force; a registration with
// preventKeyDeletion blocks even that; a dual-authorization key needs a
// first authorization by another user within 7 days. Registrations stay
// readable until the key is purged.
func (s *Service) DeleteKey(ctx context.Context, guid, idOrAlias string, force bool) (Key, error) {
	const op = "kms.DeleteKey"
	var out Key
	err := s.onKey(ctx, op, guid, idOrAlias, auth.KMSKeyDelete, true, func(c *keyCall) error {
		k := c.key
		c.ev.RequestData["force"] = force
		if k.State == StateDestroyed {
			return errDeleted(op)
		}
		var regs, prevent int
		if err := c.tx.QueryRow(`SELECT COUNT(*), COALESCE(SUM(prevent_key_deletion), 0) FROM kms_registrations WHERE key_id = ?`, k.ID).
			Scan(&regs, &prevent); err != nil {
			return errs.Internalf(op, err)
		}
		if prevent > 0 {
			return errs.E(op, errs.Conflict, "PREV_KEY_DEL_ERR",
				"The key cannot be deleted because it's protecting a cloud resource that has a retention policy. Make sure that the resource is no longer protected by a retention policy, then try again")
		}
		if regs > 0 && !force {
			return errs.E(op, errs.Conflict, "PROTECTED_RESOURCE_ERR", "Key is protecting one or more cloud resources")
		}
		if k.DualAuth && (!k.dualAuthPending(c.now) || k.DualAuthSetBy == principalID(ctx)) {
			return errs.E(op, errs.Conflict, "AUTHORIZATIONS_NOT_MET", "Number of authorizations required to delete is not met")
		}
		now := store.Time(c.now)
		by := principalID(ctx)
		if _, err := c.tx.Exec(`UPDATE kms_keys SET state = ?, deleted_by = ?, deletion_date = ?, last_update_date = ?,
			dual_auth_set_by = '', dual_auth_expires = '' WHERE id = ?`, StateDestroyed, by, now, now, k.ID); err != nil {
			return errs.Internalf(op, err)
		}
		k.State, k.DeletedBy, k.DeletionDate, k.LastUpdate, k.DualAuthSetBy, k.DualAuthExpires = StateDestroyed, by, now, now, "", ""
		out = k.view(c.in, c.now)
		c.ev.ResponseData["keyState"] = StateDestroyed
		c.ev.ResponseData["deletionDate"] = now
		c.ev.ResponseData["purgeAllowedFrom"] = store.Time(*out.PurgeAllowedFrom)
		c.ev.ResponseData["purgeEligibleOn"] = store.Time(*out.PurgeScheduledOn)
		c.ev.ResponseData["totalResources"] = regs
		return s.raiseEvent(c, EventDelete)
	})
	return out, err
}

// RestoreKey brings a deleted root key back, between 30 seconds and 30
// days after its deletion.
func (s *Service) RestoreKey(ctx context.Context, guid, idOrAlias string) (Key, error) {
	const op = "kms.RestoreKey"
	var out Key
	err := s.onKey(ctx, op, guid, idOrAlias, auth.KMSKeyRestore, true, func(c *keyCall) error {
		k := c.key
		if k.Extractable {
			return errRootRequired(op)
		}
		if k.State != StateDestroyed {
			return errInvalidState(op)
		}
		del := store.ParseTime(k.DeletionDate)
		if c.now.Before(del.Add(RestoreMinDelay)) {
			return errs.Ef(op, errs.Conflict, "REQ_TOO_EARLY_ERR",
				"The key was updated recently: Please wait and try again: Restore is allowed %v after key is deleted", RestoreMinDelay)
		}
		if !c.now.Before(del.Add(RestoreWindow)) {
			return errs.E(op, errs.Invalid, "KEY_RESTORE_EXPIRED", "Key restoration has expired")
		}
		if k.Expiration != "" && !c.now.Before(store.ParseTime(k.Expiration)) {
			return errs.E(op, errs.Invalid, "KEY_EXPIRED_ERR", "The action could not be performed on the key because the key is expired")
		}
		now := store.Time(c.now)
		if _, err := c.tx.Exec(`UPDATE kms_keys SET state = ?, deleted_by = '', deletion_date = '', last_update_date = ? WHERE id = ?`,
			StateActive, now, k.ID); err != nil {
			return errs.Internalf(op, err)
		}
		k.State, k.DeletedBy, k.DeletionDate, k.LastUpdate = StateActive, "", "", now
		out = k.view(c.in, c.now)
		c.ev.ResponseData["keyState"] = StateActive
		return s.raiseEvent(c, EventRestore)
	})
	return out, err
}

// PurgeKey removes a deleted key for good, at least 4 hours after its
// deletion. Afterwards the key id is unknown.
func (s *Service) PurgeKey(ctx context.Context, guid, idOrAlias string) (Key, error) {
	const op = "kms.PurgeKey"
	var out Key
	err := s.onKey(ctx, op, guid, idOrAlias, auth.KMSKeyPurge, true, func(c *keyCall) error {
		if c.key.State != StateDestroyed {
			return errInvalidState(op)
		}
		if c.now.Before(store.ParseTime(c.key.DeletionDate).Add(PurgeMinDelay)) {
			return errs.Ef(op, errs.Conflict, "REQ_TOO_EARLY_ERR",
				"The key was updated recently: Please wait and try again: Purge operation is allowed %v after key is deleted", PurgeMinDelay)
		}
		out = c.key.view(c.in, c.now)
		return purge(c)
	})
	return out, err
}

func purge(c *keyCall) error {
	for _, q := range []string{
		`DELETE FROM kms_key_versions WHERE key_id = ?`,
		`DELETE FROM kms_aliases WHERE key_id = ?`,
		`DELETE FROM kms_key_policies WHERE key_id = ?`,
		`DELETE FROM kms_registrations WHERE key_id = ?`,
		`DELETE FROM kms_keys WHERE id = ?`,
	} {
		if _, err := c.tx.Exec(q, c.key.ID); err != nil {
			return errs.Internalf("kms.purge", err)
		}
	}
	c.ev.ResponseData["keyState"] = StateDestroyed
	return nil
}

// SetKeyForDeletion is the first of the two authorizations a
// dual-authorization key needs to be deleted; it lapses after 7 days.
func (s *Service) SetKeyForDeletion(ctx context.Context, guid, idOrAlias string) error {
	const op = "kms.SetKeyForDeletion"
	return s.onKey(ctx, op, guid, idOrAlias, auth.KMSKeySetForDeletion, true, func(c *keyCall) error {
		if c.key.State == StateDestroyed {
			return errDeleted(op)
		}
		if !c.key.DualAuth {
			return errs.E(op, errs.Conflict, "NOT_DUAL_AUTH_ERR", "The key is not protected by a dual authorization policy")
		}
		exp := c.now.Add(DualAuthWindow)
		_, err := c.tx.Exec(`UPDATE kms_keys SET dual_auth_set_by = ?, dual_auth_expires = ? WHERE id = ?`, principalID(ctx), store.Time(exp), c.key.ID)
		if err != nil {
			return errs.Internalf(op, err)
		}
		c.ev.ResponseData["authExpiration"] = store.Time(exp)
		return nil
	})
}

// UnsetKeyForDeletion withdraws a first authorization to delete.
func (s *Service) UnsetKeyForDeletion(ctx context.Context, guid, idOrAlias string) error {
	const op = "kms.UnsetKeyForDeletion"
	return s.onKey(ctx, op, guid, idOrAlias, auth.KMSKeyUnsetDeletion, true, func(c *keyCall) error {
		if c.key.State == StateDestroyed {
			return errDeleted(op)
		}
		if !c.key.DualAuth {
			return errs.E(op, errs.Conflict, "NOT_DUAL_AUTH_ERR", "The key is not protected by a dual authorization policy")
		}
		if _, err := c.tx.Exec(`UPDATE kms_keys SET dual_auth_set_by = '', dual_auth_expires = '' WHERE id = ?`, c.key.ID); err != nil {
			return errs.Internalf(op, err)
		}
		return nil
	})
}

// SyncKey re-sends the key's last lifecycle event to the services that
// registered resources on it; allowed once an hour.
func (s *Service) SyncKey(ctx context.Context, guid, idOrAlias string) error {
	const op = "kms.SyncKey"
	return s.onKey(ctx, op, guid, idOrAlias, auth.KMSKeySync, true, func(c *keyCall) error {
		if c.key.LastLifecycle != "" {
			next := store.ParseTime(c.key.LastLifecycle).Add(SyncMinInterval)
			if c.now.Before(next) {
				return errs.Ef(op, errs.Conflict, "REQ_TOO_EARLY_ERR",
					"The key was updated recently: Please wait and try again: Sync cannot be performed until at least %s", next.UTC().Format(time.RFC3339))
			}
		}
		event := c.key.LastEventType
		if event == "" {
			event = stateEvent(c.key.effectiveState(c.now))
		}
		return s.raiseEvent(c, event)
	})
}

// stateEvent is the event that tells a service what to do for a key state.
func stateEvent(state int) string {
	switch state {
	case StateActive:
		return EventEnable
	case StateDestroyed:
		return EventDelete
	}
	return EventDisable
}
