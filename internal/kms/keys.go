package kms

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// KeyType is the only key type Key Protect has.
const KeyType = "application/vnd.ibm.kms.key+json"

// Limits on key attributes.
const (
	MaxStandardPayload = 7500
	maxAliasesPerKey   = 5
	maxTags            = 30
)

// KeyVersion names one version of a key's material.
type KeyVersion struct {
	ID           string     `json:"id"`
	CreationDate *time.Time `json:"creationDate,omitempty"`
}

// DualAuth is a key's dual-authorization deletion state.
type DualAuth struct {
	Enabled           bool       `json:"enabled"`
	KeySetForDeletion *bool      `json:"keySetForDeletion,omitempty"`
	AuthExpiration    *time.Time `json:"authExpiration,omitempty"`
}

// Key is a key as Key Protect shows it. Payload is set only by GetKey for a
// standard key.
type Key struct {
	Type                  string      `json:"type"`
	ID                    string      `json:"id"`
	Name                  string      `json:"name"`
	Description           string      `json:"description,omitempty"`
	Tags                  []string    `json:"tags,omitempty"`
	Aliases               []string    `json:"aliases,omitempty"`
	State                 int         `json:"state"`
	Extractable           bool        `json:"extractable"`
	Imported              bool        `json:"imported"`
	Payload               string      `json:"payload,omitempty"`
	CRN                   string      `json:"crn"`
	KeyRingID             string      `json:"keyRingID"`
	CreatedBy             string      `json:"createdBy"`
	CreationDate          time.Time   `json:"creationDate"`
	LastUpdateDate        *time.Time  `json:"lastUpdateDate,omitempty"`
	LastRotateDate        *time.Time  `json:"lastRotateDate,omitempty"`
	ExpirationDate        *time.Time  `json:"expirationDate,omitempty"`
	AlgorithmType         string      `json:"algorithmType"`
	KeyVersion            *KeyVersion `json:"keyVersion,omitempty"`
	DualAuthDelete        *DualAuth   `json:"dualAuthDelete,omitempty"`
	Deleted               bool        `json:"deleted"`
	DeletedBy             string      `json:"deletedBy,omitempty"`
	DeletionDate          *time.Time  `json:"deletionDate,omitempty"`
	RestoreAllowed        *bool       `json:"restoreAllowed,omitempty"`
	RestoreExpirationDate *time.Time  `json:"restoreExpirationDate,omitempty"`
	PurgeAllowed          *bool       `json:"purgeAllowed,omitempty"`
	PurgeAllowedFrom      *time.Time  `json:"purgeAllowedFrom,omitempty"`
	PurgeScheduledOn      *time.Time  `json:"purgeScheduledOn,omitempty"`
}

// keyRow is a kms_keys row with its latest version's date and its aliases.
type keyRow struct {
	ID, InstanceGUID, Name, Description string
	Tags                                []string
	Extractable, Imported               bool
	KeyRing                             string
	State                               int
	CreatedBy, CreationDate             string
	LastUpdate, LastRotate, Expiration  string
	DeletedBy, DeletionDate             string
	DualAuth                            bool
	DualAuthSetBy, DualAuthExpires      string
	LatestVersion, LatestVersionDate    string
	LastLifecycle, LastEventType        string
	Aliases                             []string
}

const keyCols = `k.id, k.instance_guid, k.name, k.description, k.tags, k.extractable, k.imported, k.key_ring, k.state,
	k.created_by, k.creation_date, k.last_update_date, k.last_rotate_date, k.expiration_date, k.deleted_by, k.deletion_date,
	k.dual_auth, k.dual_auth_set_by, k.dual_auth_expires, k.latest_version, v.creation_date, k.last_lifecycle_at, k.last_event_type
	FROM kms_keys k JOIN kms_key_versions v ON v.id = k.latest_version`

type scanner interface{ Scan(...any) error }

func scanKey(sc scanner) (*keyRow, error) {
	var k keyRow
	var tags string
	err := sc.Scan(&k.ID, &k.InstanceGUID, &k.Name, &k.Description, &tags, &k.Extractable, &k.Imported, &k.KeyRing, &k.State,
		&k.CreatedBy, &k.CreationDate, &k.LastUpdate, &k.LastRotate, &k.Expiration, &k.DeletedBy, &k.DeletionDate,
		&k.DualAuth, &k.DualAuthSetBy, &k.DualAuthExpires, &k.LatestVersion, &k.LatestVersionDate, &k.LastLifecycle, &k.LastEventType)
	if err != nil {
		return nil, err
	}
	_ = json.Unmarshal([]byte(tags), &k.Tags)
	return &k, nil
}

// effectiveState is the key's state at now: a key whose expiration date has
// passed is Deactivated even before the scheduler has recorded it.
func (k *keyRow) effectiveState(now time.Time) int {
	if (k.State == StateActive || k.State == StateSuspended) && k.Expiration != "" && !now.Before(store.ParseTime(k.Expiration)) {
		return StateDeactivated
	}
	return k.State
}

func keyCRN(in Instance, keyID string) string {
	c, err := crn.Parse(in.CRN)
	if err != nil {
		return in.CRN + ":key:" + keyID
	}
	return c.Instance().Child("key", keyID).String()
}

func keyTarget(in Instance, k *keyRow) target {
	return target{crn: keyCRN(in, k.ID), name: k.Name, typ: typeKey}
}

// view is the key as the API shows it.
func (k *keyRow) view(in Instance, now time.Time) Key {
	out := Key{Type: KeyType, ID: k.ID, Name: k.Name, Description: k.Description, Tags: k.Tags, Aliases: k.Aliases,
		State: k.effectiveState(now), Extractable: k.Extractable, Imported: k.Imported, CRN: keyCRN(in, k.ID), KeyRingID: k.KeyRing,
		CreatedBy: k.CreatedBy, CreationDate: store.ParseTime(k.CreationDate), LastUpdateDate: timePtr(k.LastUpdate),
		LastRotateDate: timePtr(k.LastRotate), ExpirationDate: timePtr(k.Expiration), AlgorithmType: "AES",
		KeyVersion:     &KeyVersion{ID: k.LatestVersion, CreationDate: timePtr(k.LatestVersionDate)},
		DualAuthDelete: &DualAuth{Enabled: k.DualAuth}, Deleted: k.State == StateDestroyed, DeletedBy: k.DeletedBy,
		DeletionDate: timePtr(k.DeletionDate)}
	if k.DualAuth {
		set := k.dualAuthPending(now)
		out.DualAuthDelete.KeySetForDeletion = &set
		if set {
			out.DualAuthDelete.AuthExpiration = timePtr(k.DualAuthExpires)
		}
	}
	if k.State == StateDestroyed {
		del := store.ParseTime(k.DeletionDate)
		restoreUntil, purgeFrom, purgeOn := del.Add(RestoreWindow), del.Add(PurgeMinDelay), del.Add(AutoPurgeAfter)
		restore := !k.Extractable && !now.Before(del.Add(RestoreMinDelay)) && now.Before(restoreUntil)
		purge := !now.Before(purgeFrom)
		out.RestoreAllowed, out.RestoreExpirationDate = &restore, &restoreUntil
		out.PurgeAllowed, out.PurgeAllowedFrom, out.PurgeScheduledOn = &purge, &purgeFrom, &purgeOn
	}
	return out
}

// dualAuthPending reports whether a first authorization to delete is in force.
func (k *keyRow) dualAuthPending(now time.Time) bool {
	return k.DualAuthSetBy != "" && now.Before(store.ParseTime(k.DualAuthExpires))
}

func loadKey(tx *store.Tx, guid, keyID string) (*keyRow, error) {
	k, err := scanKey(tx.QueryRow(`SELECT `+keyCols+` WHERE k.id = ? AND k.instance_guid = ?`, keyID, guid))
	if store.IsNoRows(err) {
		return nil, errKeyNotFound("kms.loadKey")
	}
	if err != nil {
		return nil, errs.Internalf("kms.loadKey", err)
	}
	rows, err := tx.Query(`SELECT alias FROM kms_aliases WHERE key_id = ? ORDER BY creation_date, alias`, keyID)
	if err != nil {
		return nil, errs.Internalf("kms.loadKey", err)
	}
	defer rows.Close()
	for rows.Next() {
		var a string
		if err := rows.Scan(&a); err != nil {
			return nil, errs.Internalf("kms.loadKey", err)
		}
		k.Aliases = append(k.Aliases, a)
	}
	return k, rows.Err()
}

func errKeyNotFound(op string) error {
	return errs.E(op, errs.NotExist, "KEY_NOT_FOUND_ERR", "key does not exist")
}

func errDeleted(op string) error {
	return errs.E(op, errs.Gone, "KEY_DELETED_ERR", "Key has already been deleted: Please delete references to this key")
}

func errInvalidState(op string) error {
	return errs.E(op, errs.Conflict, "KEY_ACTION_INVALID_STATE_ERR", "Key is not in a valid state")
}

func errRootRequired(op string) error {
	return errs.E(op, errs.Invalid, "KEY_ROOT_REQ_ERR", "Requested action can only be completed with a root key")
}

// resolveID turns an id or alias into a key id of the instance.
func resolveID(tx *store.Tx, guid, idOrAlias string) (string, error) {
	var id string
	err := tx.QueryRow(`SELECT id FROM kms_keys WHERE id = ? AND instance_guid = ?`, idOrAlias, guid).Scan(&id)
	if store.IsNoRows(err) {
		err = tx.QueryRow(`SELECT key_id FROM kms_aliases WHERE instance_guid = ? AND alias = ?`, guid, idOrAlias).Scan(&id)
	}
	if store.IsNoRows(err) {
		return "", errKeyNotFound("kms.resolve")
	}
	if err != nil {
		return "", errs.Internalf("kms.resolve", err)
	}
	return id, nil
}

// keyCall is one call on one key, handed to the function that does it.
type keyCall struct {
	ctx context.Context
	tx  *store.Tx
	in  Instance
	key *keyRow
	now time.Time
	ev  *AuditEvent
}

// onKey runs one call on a key: it checks the caller and the instance,
// resolves idOrAlias, authorizes action on the key, runs fn in a write
// transaction (write) or a snapshot, and records the audit event: appended
// in the transaction for writes, recorded after reads, recorded as a failure
// when anything refuses the call.
func (s *Service) onKey(ctx context.Context, op, guid, idOrAlias, action string, write bool, fn func(c *keyCall) error) error {
	return s.onKeyAuthz(ctx, op, guid, idOrAlias, action, nil, write, fn)
}

// onKeyAuthz is onKey with the authorized action chosen by key type (a root
// key's GET needs only metadata access; a standard key's returns its payload).
func (s *Service) onKeyAuthz(ctx context.Context, op, guid, idOrAlias, action string, authzAction func(extractable bool) string,
	write bool, fn func(c *keyCall) error) error {
	p, in, err := s.instance(ctx, op, guid)
	if err != nil {
		s.recordFailure(ctx, action, target{crn: in.CRN, name: guid, typ: typeInstance}, err)
		return err
	}
	t := target{crn: keyCRN(in, idOrAlias), name: idOrAlias, typ: typeKey}
	var keyID string
	var extractable bool
	err = s.db.Read(ctx, func(tx *store.Tx) error {
		if keyID, err = resolveID(tx, in.GUID, idOrAlias); err != nil {
			return err
		}
		return tx.QueryRow(`SELECT extractable FROM kms_keys WHERE id = ?`, keyID).Scan(&extractable)
	})
	authorized := action
	if authzAction != nil {
		authorized = authzAction(extractable)
	}
	if err != nil {
		// Authorize on the instance first so that a caller without access
		// cannot tell a missing key from a forbidden one.
		if aerr := s.authorize(ctx, op, p, authorized, in, ""); aerr != nil {
			err = aerr
		}
		s.recordFailure(ctx, action, t, err)
		return err
	}
	if err := s.authorize(ctx, op, p, authorized, in, keyID); err != nil {
		s.recordFailure(ctx, action, t, err)
		return err
	}
	var ev AuditEvent
	run := s.db.Read
	if write {
		run = s.db.Tx
	}
	err = run(ctx, func(tx *store.Tx) error {
		k, err := loadKey(tx, in.GUID, keyID)
		if err != nil {
			return err
		}
		t = keyTarget(in, k)
		ev = success(action, t)
		ev.RequestData["instanceID"] = in.GUID
		ev.RequestData["keyRingId"] = k.KeyRing
		ev.ResponseData["keyId"] = k.ID
		c := &keyCall{ctx: ctx, tx: tx, in: in, key: k, now: s.clock.Now(), ev: &ev}
		if err := fn(c); err != nil {
			return err
		}
		if write {
			s.hot.invalidateOnCommit(tx)
			return s.audit.Append(ctx, tx, ev)
		}
		return nil
	})
	if err != nil {
		s.recordFailure(ctx, action, t, err)
		return err
	}
	if !write {
		return s.record(ctx, ev)
	}
	return nil
}

// onInstance runs one call on an instance (lists, creates, policies, rings):
// like onKey without a key.
func (s *Service) onInstance(ctx context.Context, op, guid, action string, write bool, fn func(tx *store.Tx, in Instance, ev *AuditEvent) error) error {
	p, in, err := s.instance(ctx, op, guid)
	t := instanceTarget(in)
	if err == nil {
		err = s.authorize(ctx, op, p, action, in, "")
	}
	if err != nil {
		if t.crn == "" {
			t.name = guid
		}
		s.recordFailure(ctx, action, t, err)
		return err
	}
	ev := success(action, t)
	ev.RequestData["instanceID"] = in.GUID
	run := s.db.Read
	if write {
		run = s.db.Tx
	}
	err = run(ctx, func(tx *store.Tx) error {
		if err := fn(tx, in, &ev); err != nil {
			return err
		}
		if write {
			s.hot.invalidateOnCommit(tx)
			return s.audit.Append(ctx, tx, ev)
		}
		return nil
	})
	if err != nil {
		s.recordFailure(ctx, ev.Action, target{crn: ev.TargetID, name: ev.TargetName, typ: ev.TargetType}, err)
		return err
	}
	if !write {
		return s.record(ctx, ev)
	}
	return nil
}

// CreateKeyInput describes a key to create.
type CreateKeyInput struct {
	Name           string
	Description    string
	Tags           []string
	Aliases        []string
	Extractable    bool // true: standard key
	ExpirationDate *time.Time
	KeyRing        string // "" = default
	// Payload is the base64 key material of an imported key; with
	// EncryptedNonce and IV it is encrypted under the import token.
	Payload             string
	EncryptedNonce      string
	IV                  string
	EncryptionAlgorithm string
	// PolicyOverrides replaces the instance's key policies with Rotation and
	// DualAuthDelete (keys_with_policy_overrides).
	PolicyOverrides bool
	Rotation        *RotationPolicy
	DualAuthDelete  *bool
}

// RotationPolicy is a key's automatic rotation policy.
type RotationPolicy struct {
	Enabled       *bool `json:"enabled,omitempty"`
	IntervalMonth *int  `json:"interval_month,omitempty"`
}

var aliasRE = regexp.MustCompile(`^[A-Za-z0-9_-]{2,90}$`)

var reservedAliases = map[string]bool{"allowed_ip": true, "key": true, "keys": true, "metadata": true, "policy": true,
	"policies": true, "registration": true, "registrations": true, "ring": true, "rings": true, "rotate": true,
	"wrap": true, "unwrap": true, "rewrap": true, "version": true, "versions": true}

func validAlias(op, a string) error {
	if !aliasRE.MatchString(a) || reservedAliases[strings.ToLower(a)] || uuid.Validate(a) == nil {
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR",
			"The field 'alias' must be: 2 to 90 characters of letters, digits, '-' or '_', not a UUID and not a reserved word").On("field", "aliases")
	}
	return nil
}

func (in *CreateKeyInput) validate(op string, now time.Time) error {
	if n := utf8.RuneCountInString(in.Name); n < 2 || n > 90 {
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'name' must be: 2 to 90 characters").On("field", "name")
	}
	if utf8.RuneCountInString(in.Description) > 240 {
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'description' must be: at most 240 characters").On("field", "description")
	}
	if len(in.Tags) > maxTags {
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'tags' must be: at most 30 tags").On("field", "tags")
	}
	for _, t := range in.Tags {
		if n := utf8.RuneCountInString(t); n < 2 || n > 30 {
			return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'tags' must be: tags of 2 to 30 characters").On("field", "tags")
		}
	}
	if len(in.Aliases) > maxAliasesPerKey {
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'aliases' must be: at most 5 aliases").On("field", "aliases")
	}
	for _, a := range in.Aliases {
		if err := validAlias(op, a); err != nil {
			return err
		}
	}
	if in.ExpirationDate != nil && !in.ExpirationDate.After(now) {
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'expirationDate' must be: a date in the future").On("field", "expirationDate")
	}
	if in.Extractable && in.Rotation != nil {
		return errs.E(op, errs.Invalid, "KEY_ROOT_REQ_ERR", "Rotation policy cannot be set on a standard key")
	}
	if in.Rotation != nil && in.Rotation.IntervalMonth != nil {
		if err := validInterval(op, *in.Rotation.IntervalMonth); err != nil {
			return err
		}
	}
	return nil
}

func validInterval(op string, m int) error {
	if m < 1 || m > 12 {
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'interval_month' must be: an integer between 1 and 12").On("field", "interval_month")
	}
	return nil
}

// CreateKey creates a root or standard key, generated or imported.
func (s *Service) CreateKey(ctx context.Context, guid string, in CreateKeyInput) (Key, error) {
	const op = "kms.CreateKey"
	action := auth.KMSKeyCreate
	var out Key
	err := s.onInstance(ctx, op, guid, action, true, func(tx *store.Tx, inst Instance, ev *AuditEvent) error {
		now := s.clock.Now()
		if in.PolicyOverrides {
			ev.Action = "kms.secrets-with-policy-overrides.create"
		}
		if err := in.validate(op, now); err != nil {
			return err
		}
		if in.KeyRing == "" {
			in.KeyRing = "default"
		}
		var ring string
		if err := tx.QueryRow(`SELECT id FROM kms_key_rings WHERE instance_guid = ? AND id = ?`, inst.GUID, in.KeyRing).Scan(&ring); err != nil {
			if store.IsNoRows(err) {
				return errs.E(op, errs.NotExist, "KEY_RING_NOT_FOUND_ERR", "The key ring does not exist").On("header", "x-kms-key-ring")
			}
			return errs.Internalf(op, err)
		}
		pol, err := loadInstancePolicies(tx, inst.GUID)
		if err != nil {
			return err
		}
		imported := in.Payload != ""
		if err := pol.allowsCreate(op, in.Extractable, imported, in.EncryptedNonce != ""); err != nil {
			return err
		}
		material, err := s.keyMaterial(tx, op, inst, in)
		if err != nil {
			return err
		}
		defer seal.Wipe(material)
		id := uuid.NewString()
		p := principalID(ctx)
		tags, _ := json.Marshal(nonNil(in.Tags))
		exp := ""
		if in.ExpirationDate != nil {
			exp = store.Time(*in.ExpirationDate)
		}
		dual := pol.DualAuth
		rotEnabled, rotInterval := pol.RotationEnabled, pol.RotationInterval
		if in.PolicyOverrides {
			dual = in.DualAuthDelete != nil && *in.DualAuthDelete
			rotEnabled, rotInterval = false, 0
			if in.Rotation != nil {
				rotEnabled = in.Rotation.Enabled == nil || *in.Rotation.Enabled
				if in.Rotation.IntervalMonth != nil {
					rotInterval = *in.Rotation.IntervalMonth
				} else if rotEnabled {
					rotInterval = 1
				}
			}
		}
		if in.Extractable {
			rotEnabled, rotInterval = false, 0
		}
		versionID := uuid.NewString()
		if _, err := tx.Exec(`INSERT INTO kms_keys (id, instance_guid, name, description, tags, extractable, imported, key_ring, state,
			created_by, creation_date, expiration_date, dual_auth, latest_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			id, inst.GUID, in.Name, in.Description, string(tags), in.Extractable, imported, in.KeyRing, StateActive,
			p, store.Time(now), exp, dual, versionID); err != nil {
			return errs.Internalf(op, err)
		}
		if err := s.insertVersion(tx, id, versionID, 1, material, now); err != nil {
			return err
		}
		for _, a := range in.Aliases {
			if err := insertAlias(tx, op, inst.GUID, id, a, p, now); err != nil {
				return err
			}
		}
		if dual {
			if err := upsertKeyPolicy(tx, id, "dualAuthDelete", true, 0, p, now); err != nil {
				return err
			}
		}
		if rotEnabled || rotInterval > 0 {
			if err := upsertKeyPolicy(tx, id, "rotation", rotEnabled, rotInterval, p, now); err != nil {
				return err
			}
		}
		k, err := loadKey(tx, inst.GUID, id)
		if err != nil {
			return err
		}
		out = k.view(inst, now)
		ev.TargetID, ev.TargetName, ev.TargetType = out.CRN, out.Name, typeKey
		ev.RequestData["keyType"] = keyTypeName(in.Extractable)
		ev.RequestData["keyRingId"] = in.KeyRing
		ev.ResponseData["keyId"] = id
		ev.ResponseData["keyState"] = StateActive
		ev.ResponseData["keyVersionId"] = versionID
		ev.ResponseData["keyVersionCreationDate"] = store.Time(now)
		if exp != "" {
			ev.ResponseData["expirationDate"] = exp
		}
		return nil
	})
	return out, err
}

func keyTypeName(extractable bool) string {
	if extractable {
		return "standard_key"
	}
	return "root_key"
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// keyMaterial generates, decodes or unwraps (import token) the new key's material.
func (s *Service) keyMaterial(tx *store.Tx, op string, inst Instance, in CreateKeyInput) ([]byte, error) {
	if in.Payload == "" {
		if in.EncryptedNonce != "" || in.IV != "" {
			return nil, errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'payload' must be: provided with 'encryptedNonce' and 'iv'").On("field", "payload")
		}
		return seal.RandomKey(), nil
	}
	if in.EncryptedNonce != "" || in.IV != "" {
		return s.importWithToken(tx, op, inst.GUID, in.Payload, in.EncryptedNonce, in.IV, in.EncryptionAlgorithm, in.Extractable)
	}
	return decodeMaterial(op, in.Payload, in.Extractable)
}

// decodeMaterial checks plain imported material: an AES key for a root key,
// up to 7,500 bytes for a standard key.
func decodeMaterial(op, payload string, extractable bool) ([]byte, error) {
	if len(payload) > base64.StdEncoding.EncodedLen(MaxStandardPayload)+4 {
		return nil, errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'payload' must be: at most 7,500 bytes of key material").On("field", "payload")
	}
	m, err := base64.StdEncoding.DecodeString(payload)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'payload' must be: a base64 encoded key material").On("field", "payload")
	}
	return m, checkMaterial(op, m, extractable)
}

func checkMaterial(op string, m []byte, extractable bool) error {
	if extractable {
		if len(m) == 0 || len(m) > MaxStandardPayload {
			return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'payload' must be: 1 to 7,500 bytes of key material").On("field", "payload")
		}
		return nil
	}
	if n := len(m); n != 16 && n != 24 && n != 32 {
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'payload' must be: a 128, 192 or 256 bit key").On("field", "payload")
	}
	return nil
}

// insertVersion seals material under the master key, bound to the key and
// version ids, and stores it as a new version.
func (s *Service) insertVersion(tx *store.Tx, keyID, versionID string, seq int, material []byte, now time.Time) error {
	sealed := s.master.Seal(material, materialAAD(keyID, versionID))
	if _, err := tx.Exec(`INSERT INTO kms_key_versions (id, key_id, seq, material, creation_date) VALUES (?, ?, ?, ?, ?)`,
		versionID, keyID, seq, sealed, store.Time(now)); err != nil {
		return errs.Internalf("kms.insertVersion", err)
	}
	return nil
}

func materialAAD(keyID, versionID string) []byte {
	return []byte("keyline-kms-material\x00" + keyID + "\x00" + versionID)
}

// openVersion unseals a version's material.
func (s *Service) openVersion(keyID, versionID string, sealed []byte) ([]byte, error) {
	m, err := s.master.Open(sealed, materialAAD(keyID, versionID))
	if err != nil {
		return nil, errs.E("kms.openVersion", errs.Internal, "INCOMPLETE_METADATA_ERR", "Key metadata became corrupted").Because(err)
	}
	return m, nil
}

func insertAlias(tx *store.Tx, op, guid, keyID, alias, by string, now time.Time) error {
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM kms_aliases WHERE key_id = ?`, keyID).Scan(&n); err != nil {
		return errs.Internalf(op, err)
	}
	if n >= maxAliasesPerKey {
		return errs.E(op, errs.Invalid, "ALIASES_LIMIT_ERR", "A key can have at most 5 aliases")
	}
	if err := tx.QueryRow(`SELECT COUNT(*) FROM kms_aliases WHERE instance_guid = ?`, guid).Scan(&n); err != nil {
		return errs.Internalf(op, err)
	}
	if n >= 1000 {
		return errs.E(op, errs.Invalid, "ALIASES_LIMIT_ERR", "An instance can have at most 1,000 aliases")
	}
	if _, err := tx.Exec(`INSERT INTO kms_aliases (instance_guid, alias, key_id, created_by, creation_date) VALUES (?, ?, ?, ?, ?)`,
		guid, alias, keyID, by, store.Time(now)); err != nil {
		if store.IsUnique(err) {
			return errs.E(op, errs.Conflict, "KEY_ALIAS_NOT_UNIQUE_ERR", "The alias is already used by a key of this instance")
		}
		return errs.Internalf(op, err)
	}
	return nil
}

// GetKey returns a key; a standard key comes with its payload.
func (s *Service) GetKey(ctx context.Context, guid, idOrAlias string) (Key, error) {
	var out Key
	// Reading a root key shows no material, so metadata access suffices.
	authz := func(extractable bool) string {
		if extractable {
			return auth.KMSKeyRead
		}
		return auth.KMSKeyReadMetadata
	}
	err := s.onKeyAuthz(ctx, "kms.GetKey", guid, idOrAlias, auth.KMSKeyRead, authz, false, func(c *keyCall) error {
		out = c.key.view(c.in, c.now)
		c.ev.ResponseData["keyState"] = out.State
		if c.key.Extractable && c.key.State != StateDestroyed {
			m, err := s.loadMaterial(c.tx, c.key.ID, c.key.LatestVersion)
			if err != nil {
				return err
			}
			out.Payload = base64.StdEncoding.EncodeToString(m)
			seal.Wipe(m)
		}
		return nil
	})
	return out, err
}

func (s *Service) loadMaterial(tx *store.Tx, keyID, versionID string) ([]byte, error) {
	var sealed []byte
	if err := tx.QueryRow(`SELECT material FROM kms_key_versions WHERE id = ? AND key_id = ?`, versionID, keyID).Scan(&sealed); err != nil {
		return nil, errs.Internalf("kms.loadMaterial", err)
	}
	return s.openVersion(keyID, versionID, sealed)
}

// GetKeyMetadata returns a key without its payload.
func (s *Service) GetKeyMetadata(ctx context.Context, guid, idOrAlias string) (Key, error) {
	var out Key
	err := s.onKey(ctx, "kms.GetKeyMetadata", guid, idOrAlias, auth.KMSKeyReadMetadata, false, func(c *keyCall) error {
		out = c.key.view(c.in, c.now)
		c.ev.ResponseData["keyState"] = out.State
		return nil
	})
	return out, err
}

// SetKeyRing moves a key to another ring of its instance.
func (s *Service) SetKeyRing(ctx context.Context, guid, idOrAlias, ring string) (Key, error) {
	const op = "kms.SetKeyRing"
	var out Key
	err := s.onKey(ctx, op, guid, idOrAlias, auth.KMSKeyPatch, true, func(c *keyCall) error {
		if ring == "" {
			return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'keyRingID' must be: the id of a key ring").On("field", "keyRingID")
		}
		var id string
		if err := c.tx.QueryRow(`SELECT id FROM kms_key_rings WHERE instance_guid = ? AND id = ?`, c.in.GUID, ring).Scan(&id); err != nil {
			if store.IsNoRows(err) {
				return errs.E(op, errs.NotExist, "KEY_RING_NOT_FOUND_ERR", "The key ring does not exist").On("field", "keyRingID")
			}
			return errs.Internalf(op, err)
		}
		c.ev.RequestData["newKeyRingId"] = ring
		if _, err := c.tx.Exec(`UPDATE kms_keys SET key_ring = ?, last_update_date = ? WHERE id = ?`, ring, store.Time(c.now), c.key.ID); err != nil {
			return errs.Internalf(op, err)
		}
		c.key.KeyRing, c.key.LastUpdate = ring, store.Time(c.now)
		out = c.key.view(c.in, c.now)
		return nil
	})
	return out, err
}

// KeyVersionList is one page of a key's versions.
type KeyVersionList struct {
	Versions []KeyVersion
	Total    int
}

// ListKeyVersions lists a key's versions, newest first. The versions of a
// key that is not Active are listed only with allKeyStates.
func (s *Service) ListKeyVersions(ctx context.Context, guid, idOrAlias string, limit, offset int, allKeyStates bool) (KeyVersionList, error) {
	const op = "kms.ListKeyVersions"
	var out KeyVersionList
	err := s.onKey(ctx, op, guid, idOrAlias, auth.KMSKeyVersionsList, false, func(c *keyCall) error {
		if c.key.Extractable {
			return errRootRequired(op)
		}
		if !allKeyStates && c.key.effectiveState(c.now) != StateActive {
			return errInvalidState(op)
		}
		if err := c.tx.QueryRow(`SELECT COUNT(*) FROM kms_key_versions WHERE key_id = ?`, c.key.ID).Scan(&out.Total); err != nil {
			return errs.Internalf(op, err)
		}
		rows, err := c.tx.Query(`SELECT id, creation_date FROM kms_key_versions WHERE key_id = ? ORDER BY seq DESC LIMIT ? OFFSET ?`,
			c.key.ID, limit, offset)
		if err != nil {
			return errs.Internalf(op, err)
		}
		defer rows.Close()
		for rows.Next() {
			var id, d string
			if err := rows.Scan(&id, &d); err != nil {
				return errs.Internalf(op, err)
			}
			out.Versions = append(out.Versions, KeyVersion{ID: id, CreationDate: timePtr(d)})
		}
		c.ev.ResponseData["totalResources"] = out.Total
		return rows.Err()
	})
	return out, err
}

// CreateAlias gives a key one more alias.
func (s *Service) CreateAlias(ctx context.Context, guid, idOrAlias, alias string) (Alias, error) {
	const op = "kms.CreateAlias"
	var out Alias
	err := s.onKey(ctx, op, guid, idOrAlias, auth.KMSAliasCreate, true, func(c *keyCall) error {
		if err := validAlias(op, alias); err != nil {
			return err
		}
		if c.key.State == StateDestroyed {
			return errDeleted(op)
		}
		by := principalID(ctx)
		if err := insertAlias(c.tx, op, c.in.GUID, c.key.ID, alias, by, c.now); err != nil {
			return err
		}
		c.ev.RequestData["alias"] = alias
		out = Alias{KeyID: c.key.ID, Alias: alias, CreatedBy: by, CreationDate: c.now}
		return nil
	})
	return out, err
}

// Alias is another name of a key.
type Alias struct {
	KeyID        string    `json:"keyId"`
	Alias        string    `json:"alias"`
	CreatedBy    string    `json:"createdBy"`
	CreationDate time.Time `json:"creationDate"`
}

// DeleteAlias removes an alias of a key.
func (s *Service) DeleteAlias(ctx context.Context, guid, idOrAlias, alias string) error {
	const op = "kms.DeleteAlias"
	return s.onKey(ctx, op, guid, idOrAlias, auth.KMSAliasDelete, true, func(c *keyCall) error {
		c.ev.RequestData["alias"] = alias
		res, err := c.tx.Exec(`DELETE FROM kms_aliases WHERE instance_guid = ? AND alias = ? AND key_id = ?`, c.in.GUID, alias, c.key.ID)
		if err != nil {
			return errs.Internalf(op, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.E(op, errs.NotExist, "KEY_ALIAS_NOT_FOUND_ERR", "The alias does not exist on this key")
		}
		return nil
	})
}
