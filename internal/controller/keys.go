package controller

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// Resource key states.
const (
	KeyActive  = "active"
	KeyRemoved = "removed"
)

// ResourceKey is a set of service credentials for an instance.
type ResourceKey struct {
	GUID         string
	CRN          crn.CRN // <instance CRN with resource-key:<guid>>
	Name         string
	AccountID    string
	InstanceGUID string
	InstanceCRN  crn.CRN
	Role         string // a role CRN
	State        string
	// Credentials are set on the key that CreateResourceKey returns and on
	// the one ResourceKeyCredentials returns; they are stored only sealed.
	Credentials map[string]any

	CreatedAt, UpdatedAt, DeletedAt time.Time
	CreatedBy, DeletedBy            string
}

// CreateKeyRequest asks for new credentials.
type CreateKeyRequest struct {
	Name   string
	Source string // the instance GUID or CRN
	Role   string // a role CRN or name; "" is the service's DefaultKeyRole
}

// CreateResourceKey creates credentials for an instance from its broker.
func (c *Controller) CreateResourceKey(ctx context.Context, req CreateKeyRequest) (*ResourceKey, error) {
	const op = "controller.CreateResourceKey"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	if err := validateName(op, req.Name); err != nil {
		return nil, err
	}
	if req.Source == "" {
		return nil, errs.E(op, errs.Invalid, "MISSING_FIELD", "The source field is required: the GUID or CRN of the instance").On("field", "source")
	}
	role := ""
	if req.Role != "" {
		if role = auth.RoleCRN(req.Role); role == "" {
			return nil, errs.Ef(op, errs.Invalid, "INVALID_ROLE", "The role %q is not a known IAM role", req.Role).On("field", "role")
		}
	}
	inst, unlock, err := c.loadLocked(ctx, op, req.Source)
	if errs.Is(errs.NotExist, err) {
		return nil, errs.E(op, errs.NotExist, "INSTANCE_NOT_FOUND", "The source instance could not be found").On("field", "source")
	}
	if err != nil {
		return nil, err
	}
	defer unlock()
	guid := uuid.NewString()
	now := c.now()
	key := &ResourceKey{GUID: guid, CRN: inst.CRN.Child("resource-key", guid), Name: req.Name, AccountID: inst.AccountID,
		InstanceGUID: inst.GUID, InstanceCRN: inst.CRN, Role: role, State: KeyActive, CreatedAt: now, UpdatedAt: now, CreatedBy: p.IAMID}
	action := inst.ServiceName + ".key.create"
	fail := func(err error) (*ResourceKey, error) {
		c.recordEvent(ctx, keyEvent(action, key, err))
		return nil, err
	}
	if err := c.authorize(ctx, op, p, auth.KeyCreate, inst); err != nil {
		if errs.Is(errs.NotExist, err) {
			return nil, errs.E(op, errs.NotExist, "INSTANCE_NOT_FOUND", "The source instance could not be found").On("field", "source")
		}
		return fail(err)
	}
	if inst.State != StateActive {
		return fail(errs.Ef(op, errs.Conflict, "INSTANCE_NOT_ACTIVE", "The instance is %s; keys can be created only for an active instance", inst.State))
	}
	entry, err := c.service(op, inst.ServiceName)
	if err != nil {
		return fail(err)
	}
	if key.Role == "" {
		key.Role = cmp.Or(entry.svc.DefaultKeyRole, auth.RoleReader)
	}
	// From here the operation runs to its end and is recorded even if the
	// caller goes away: the broker's work must not go unrecorded.
	ctx = context.WithoutCancel(ctx)
	creds, err := entry.broker.Credentials(ctx, *inst, *key)
	if err != nil {
		return fail(brokerError(op, err))
	}
	sealed, err := c.sealCredentials(key, creds)
	if err != nil {
		return fail(errs.Internalf(op, err))
	}
	err = c.db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`INSERT INTO rc_resource_keys (guid, crn, name, account_id, instance_guid, role, state, created_at, created_by, updated_at, sealed_credentials)
			VALUES (?,?,?,?,?,?,?,?,?,?,?)`, key.GUID, key.CRN.String(), key.Name, key.AccountID, key.InstanceGUID, key.Role, key.State,
			ts(key.CreatedAt), key.CreatedBy, ts(key.UpdatedAt), sealed); err != nil {
			return err
		}
		return c.appendEvent(ctx, tx, keyEvent(action, key, nil).withStatus(http.StatusCreated))
	})
	if err != nil {
		if rerr := c.revoke(ctx, entry, inst, key); rerr != nil {
			c.logger.Error("revoke credentials of an unrecorded key", "key", key.GUID, "err", rerr)
		}
		return nil, err
	}
	key.Credentials = creds
	return key, nil
}

// GetResourceKey returns a key by GUID or CRN, without its credentials.
func (c *Controller) GetResourceKey(ctx context.Context, id string) (*ResourceKey, error) {
	_, key, _, err := c.readableKey(ctx, "controller.GetResourceKey", id)
	if err != nil {
		return nil, err
	}
	return key, nil
}

// CredentialsViewable says whether keys keep their credentials to be viewed
// again (false: onetime credentials).
func (c *Controller) CredentialsViewable() bool { return c.sealer != nil }

// sealCredentials seals creds bound to the key's CRN; "" when the
// controller keeps no credentials.
func (c *Controller) sealCredentials(key *ResourceKey, creds map[string]any) (string, error) {
	if c.sealer == nil {
		return "", nil
	}
	plain, err := json.Marshal(creds)
	if err != nil {
		return "", err
	}
	defer seal.Wipe(plain)
	return base64.StdEncoding.EncodeToString(c.sealer.Seal(plain, []byte(key.CRN.String()))), nil
}

// ResourceKeyCredentials returns an active key with its credentials, to a
// user who may create credentials for its instance (as the IBM console shows
// them again to those who could have made them). Each reading is audited
// as <service>.key.read. A user without that right gets a Permission error
// and no event: GET shows them the key with its credentials redacted.
func (c *Controller) ResourceKeyCredentials(ctx context.Context, id string) (*ResourceKey, error) {
	const op = "controller.ResourceKeyCredentials"
	p, key, inst, err := c.readableKey(ctx, op, id)
	if err != nil {
		return nil, err
	}
	action := inst.ServiceName + ".key.read"
	fail := func(err error) (*ResourceKey, error) {
		c.recordEvent(ctx, keyEvent(action, key, err))
		return nil, err
	}
	if err := c.authorize(ctx, op, p, auth.KeyCreate, inst); err != nil {
		return nil, err
	}
	var sealed string
	if err := c.db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT sealed_credentials FROM rc_resource_keys WHERE guid = ?`, key.GUID).Scan(&sealed)
	}); err != nil {
		return nil, err
	}
	if key.State != KeyActive || sealed == "" || c.sealer == nil {
		return nil, errs.E(op, errs.NotExist, "CREDENTIALS_NOT_KEPT",
			"The credentials of this key were shown once, when it was created, and are not kept: create new credentials")
	}
	raw, err := base64.StdEncoding.DecodeString(sealed)
	if err != nil {
		return fail(errs.Internalf(op, err))
	}
	plain, err := c.sealer.Open(raw, []byte(key.CRN.String()))
	if err != nil {
		return fail(errs.Internalf(op, err))
	}
	defer seal.Wipe(plain)
	if err := json.Unmarshal(plain, &key.Credentials); err != nil {
		return fail(errs.Internalf(op, err))
	}
	c.recordEvent(ctx, keyEvent(action, key, nil))
	return key, nil
}

// readableKey loads a key the caller may read, with its instance; a key of
// an instance the caller cannot see is reported missing.
func (c *Controller) readableKey(ctx context.Context, op, id string) (*auth.Principal, *ResourceKey, *Instance, error) {
	p, err := principal(ctx, op)
	if err != nil {
		return nil, nil, nil, err
	}
	key, inst, err := c.loadKey(ctx, op, id)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := c.authorize(ctx, op, p, auth.KeyRead, inst); err != nil {
		return nil, nil, nil, keyHidden(op, err)
	}
	return p, key, inst, nil
}

// keyHidden reports a key of another account as a missing key, not a missing instance.
func keyHidden(op string, err error) error {
	if errs.Is(errs.NotExist, err) {
		return errNoKey(op)
	}
	return err
}

func errNoKey(op string) error {
	return errs.E(op, errs.NotExist, "KEY_NOT_FOUND", "The resource key could not be found")
}

// KeyFilter narrows ListResourceKeys.
type KeyFilter struct {
	GUID, Name string
	InstanceID string // the source instance's GUID or CRN
	Limit      int
	Start      string
}

// KeyPage is one page of resource keys.
type KeyPage struct {
	Keys      []ResourceKey
	NextStart string
}

// ListResourceKeys lists the active keys of the caller's account that the caller may read.
func (c *Controller) ListResourceKeys(ctx context.Context, f KeyFilter) (*KeyPage, error) {
	const op = "controller.ListResourceKeys"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	limit, err := pageLimit(op, f.Limit)
	if err != nil {
		return nil, err
	}
	after, err := decodeCursor(op, f.Start)
	if err != nil {
		return nil, err
	}
	where := []string{"k.account_id = ?", "k.state = ?"}
	args := []any{p.AccountID, KeyActive}
	if f.GUID != "" {
		where, args = append(where, "k.guid = ?"), append(args, f.GUID)
	}
	if f.Name != "" {
		where, args = append(where, "k.name = ?"), append(args, f.Name)
	}
	if f.InstanceID != "" {
		where, args = append(where, "(i.guid = ? OR i.crn = ?)"), append(args, f.InstanceID, f.InstanceID)
	}
	if after != nil {
		where, args = append(where, "(k.created_at > ? OR (k.created_at = ? AND k.guid > ?))"), append(args, after.at, after.at, after.id)
	}
	type row struct {
		key  ResourceKey
		inst Instance
	}
	var rows []row
	err = c.db.Read(ctx, func(tx *store.Tx) error {
		rs, err := tx.Query(`SELECT `+keyColumns+`, i.service_name FROM rc_resource_keys k JOIN rc_instances i ON i.guid = k.instance_guid
			WHERE `+strings.Join(where, " AND ")+` ORDER BY k.created_at, k.guid`, args...)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var r row
			k, err := scanKey(rs, &r.inst.ServiceName)
			if err != nil {
				return err
			}
			r.key = *k
			r.inst.GUID, r.inst.AccountID = k.InstanceGUID, k.AccountID
			rows = append(rows, r)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, err
	}
	page := &KeyPage{Keys: []ResourceKey{}}
	for _, r := range rows {
		err := c.authorize(ctx, op, p, auth.KeyRead, &r.inst)
		if errs.Is(errs.Permission, err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if len(page.Keys) == limit {
			last := page.Keys[limit-1]
			page.NextStart = encodeCursor(cursor{at: ts(last.CreatedAt), id: last.GUID})
			break
		}
		page.Keys = append(page.Keys, r.key)
	}
	return page, nil
}

// DeleteResourceKey deletes a key; a broker that issued revocable credentials revokes them first.
func (c *Controller) DeleteResourceKey(ctx context.Context, id string) error {
	const op = "controller.DeleteResourceKey"
	p, err := principal(ctx, op)
	if err != nil {
		return err
	}
	key, inst, err := c.loadKey(ctx, op, id)
	if err != nil {
		return err
	}
	action := inst.ServiceName + ".key.delete"
	if err := c.authorize(ctx, op, p, auth.KeyDelete, inst); err != nil {
		if errs.Is(errs.NotExist, err) {
			return errNoKey(op)
		}
		c.recordEvent(ctx, keyEvent(action, key, err))
		return err
	}
	if key.State != KeyActive {
		err := errs.E(op, errs.Gone, "KEY_DELETED", "The resource key has already been deleted")
		c.recordEvent(ctx, keyEvent(action, key, err))
		return err
	}
	entry, err := c.service(op, inst.ServiceName)
	if err != nil {
		return err
	}
	// From here the operation runs to its end and is recorded even if the
	// caller goes away: the broker's work must not go unrecorded.
	ctx = context.WithoutCancel(ctx)
	if err := c.revoke(ctx, entry, inst, key); err != nil {
		c.recordEvent(ctx, keyEvent(action, key, err))
		return err
	}
	return c.db.Tx(ctx, func(tx *store.Tx) error {
		return c.removeKeys(ctx, tx, inst, []ResourceKey{*key}, p.IAMID)
	})
}

func (c *Controller) revoke(ctx context.Context, entry *catalogEntry, inst *Instance, key *ResourceKey) error {
	if r, ok := entry.broker.(CredentialRevoker); ok {
		if err := r.RevokeCredentials(ctx, *inst, *key); err != nil {
			return brokerError("controller.revoke", err)
		}
	}
	return nil
}

// removeKeys marks keys removed and records their deletion, in tx.
func (c *Controller) removeKeys(ctx context.Context, tx *store.Tx, inst *Instance, keys []ResourceKey, by string) error {
	now := c.now()
	for i := range keys {
		k := &keys[i]
		if _, err := tx.Exec(`UPDATE rc_resource_keys SET state = ?, updated_at = ?, deleted_at = ?, deleted_by = ? WHERE guid = ?`,
			KeyRemoved, ts(now), ts(now), by, k.GUID); err != nil {
			return err
		}
		k.State, k.UpdatedAt, k.DeletedAt, k.DeletedBy = KeyRemoved, now, now, by
		if err := c.appendEvent(ctx, tx, keyEvent(inst.ServiceName+".key.delete", k, nil).withStatus(http.StatusNoContent)); err != nil {
			return err
		}
	}
	return nil
}

func (c *Controller) activeKeys(ctx context.Context, instanceGUID string) ([]ResourceKey, error) {
	var keys []ResourceKey
	err := c.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT `+keyColumns+` FROM rc_resource_keys k WHERE k.instance_guid = ? AND k.state = ? ORDER BY k.created_at`, instanceGUID, KeyActive)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			k, err := scanKey(rows)
			if err != nil {
				return err
			}
			keys = append(keys, *k)
		}
		return rows.Err()
	})
	return keys, err
}

func (c *Controller) loadKey(ctx context.Context, op, id string) (*ResourceKey, *Instance, error) {
	col := "k.guid"
	if strings.HasPrefix(id, "crn:") {
		col = "k.crn"
	}
	var key *ResourceKey
	var inst *Instance
	err := c.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		key, err = scanKey(tx.QueryRow(`SELECT `+keyColumns+` FROM rc_resource_keys k WHERE `+col+` = ?`, id))
		if store.IsNoRows(err) {
			return errNoKey(op)
		}
		if err != nil {
			return err
		}
		inst, err = instanceByID(tx, op, key.InstanceGUID)
		return err
	})
	return key, inst, err
}

const keyColumns = `k.guid, k.crn, k.name, k.account_id, k.instance_guid, k.role, k.state, k.created_at, k.created_by, k.updated_at, k.deleted_at, k.deleted_by`

func scanKey(row scanner, extra ...any) (*ResourceKey, error) {
	var k ResourceKey
	var crnStr, created, updated, deleted string
	dest := append([]any{&k.GUID, &crnStr, &k.Name, &k.AccountID, &k.InstanceGUID, &k.Role, &k.State, &created, &k.CreatedBy, &updated, &deleted, &k.DeletedBy}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	var err error
	if k.CRN, err = crn.Parse(crnStr); err != nil {
		return nil, errs.Internalf("controller.scanKey", err)
	}
	k.InstanceCRN = k.CRN.Instance()
	k.CreatedAt, k.UpdatedAt, k.DeletedAt = parseTS(created), parseTS(updated), parseTS(deleted)
	return &k, nil
}
