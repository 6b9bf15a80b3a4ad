package iam

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Service names of IAM itself, as resources of policies and audit targets.
const (
	ServiceIdentity       = "iam-identity"
	ServiceUserManagement = "user-management"
	ServicePolicies       = "iam-am"
)

// Actions on IAM's own resources, named as Activity Tracker names them.
const (
	ActionAPIKeyCreate    = "iam-identity.apikey.create"
	ActionAPIKeyGet       = "iam-identity.apikey.get"
	ActionAPIKeyList      = "iam-identity.apikey.list"
	ActionAPIKeyDelete    = "iam-identity.apikey.delete"
	ActionServiceIDCreate = "iam-identity.serviceid.create"
	ActionServiceIDGet    = "iam-identity.serviceid.get"
	ActionServiceIDUpdate = "iam-identity.serviceid.update"
	ActionServiceIDDelete = "iam-identity.serviceid.delete"
	ActionUserInvite      = "user-management.user.create"
	ActionUserRead        = "user-management.user.read"
	ActionUserRemove      = "user-management.user.delete"
	ActionTokenCreate     = "iam-identity.token.create"
)

// Kinds of identities that can own API keys.
const (
	kindUser      = "user"
	kindServiceID = "serviceid"
)

// Account is a Keyline account: the scope of every identity, policy and resource.
type Account struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// User is a person of an account, in the user management API's shape.
type User struct {
	ID        string    `json:"id"`
	IAMID     string    `json:"iam_id"`
	Realm     string    `json:"realm"`
	UserID    string    `json:"user_id"`
	Email     string    `json:"email"`
	Firstname string    `json:"firstname,omitempty"`
	State     string    `json:"state"`
	AccountID string    `json:"account_id"`
	AddedOn   time.Time `json:"added_on"`
}

// ServiceID is an identity for an application, in IAM Identity's shape.
type ServiceID struct {
	ID          string    `json:"id"`
	IAMID       string    `json:"iam_id"`
	EntityTag   string    `json:"entity_tag"`
	CRN         string    `json:"crn"`
	Locked      bool      `json:"locked"`
	CreatedAt   time.Time `json:"created_at"`
	ModifiedAt  time.Time `json:"modified_at"`
	AccountID   string    `json:"account_id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
}

// APIKey is an API key's record; its value is shown only once, at creation.
type APIKey struct {
	ID          string    `json:"id"`
	EntityTag   string    `json:"entity_tag"`
	CRN         string    `json:"crn"`
	Locked      bool      `json:"locked"`
	CreatedAt   time.Time `json:"created_at"`
	CreatedBy   string    `json:"created_by"`
	ModifiedAt  time.Time `json:"modified_at"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	IAMID       string    `json:"iam_id"`
	AccountID   string    `json:"account_id"`
}

// identity is the stored form of a user or service ID.
type identity struct {
	IAMID, ID, AccountID, Kind, Name, Email, Description, CreatedBy string
	CreatedAt, ModifiedAt                                           time.Time
	Version                                                         int
}

func (id identity) principal() *auth.Principal {
	p := &auth.Principal{IAMID: id.IAMID, AccountID: id.AccountID, Name: id.Name, Type: auth.User}
	if id.Kind == kindServiceID {
		p.Type = auth.ServiceID
	}
	return p
}

func (id identity) user() User {
	u := User{ID: id.ID, IAMID: id.IAMID, Realm: "IBMid", UserID: id.Email, Email: id.Email,
		State: "ACTIVE", AccountID: id.AccountID, AddedOn: id.CreatedAt}
	if id.Name != id.Email { // invited users have no name but their email
		u.Firstname = id.Name
	}
	return u
}

func (id identity) serviceID() ServiceID {
	return ServiceID{ID: id.ID, IAMID: id.IAMID, EntityTag: strconv.Itoa(id.Version),
		CRN:       iamCRN(ServiceIdentity, id.AccountID, "serviceid", id.ID),
		CreatedAt: id.CreatedAt, ModifiedAt: id.ModifiedAt, AccountID: id.AccountID, Name: id.Name, Description: id.Description}
}

// resource is the policy resource that governs managing this identity and its API keys.
func (id identity) resource() auth.Resource {
	if id.Kind == kindServiceID {
		return auth.Resource{AccountID: id.AccountID, ServiceName: ServiceIdentity, ResourceType: "serviceid", ResourceID: id.ID}
	}
	return auth.Resource{AccountID: id.AccountID, ServiceName: ServiceIdentity, ResourceType: "user", ResourceID: id.IAMID}
}

const identityColumns = `iam_id, id, account_id, kind, name, email, description, created_by, created_at, modified_at, version`

func scanIdentity(row interface{ Scan(...any) error }) (identity, error) {
	var id identity
	var created, modified string
	err := row.Scan(&id.IAMID, &id.ID, &id.AccountID, &id.Kind, &id.Name, &id.Email, &id.Description, &id.CreatedBy,
		&created, &modified, &id.Version)
	id.CreatedAt, id.ModifiedAt = store.ParseTime(created), store.ParseTime(modified)
	return id, err
}

func getIdentity(tx *store.Tx, op, iamID string) (identity, error) {
	id, err := scanIdentity(tx.QueryRow(`SELECT `+identityColumns+` FROM iam_identities WHERE iam_id = ?`, iamID))
	if store.IsNoRows(err) {
		return identity{}, errs.Ef(op, errs.NotExist, "not_found", "The identity %s does not exist", iamID)
	}
	if err != nil {
		return identity{}, errs.Internalf(op, err)
	}
	return id, nil
}

func insertIdentity(tx *store.Tx, id identity) error {
	_, err := tx.Exec(`INSERT INTO iam_identities (`+identityColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?)`,
		id.IAMID, id.ID, id.AccountID, id.Kind, id.Name, id.Email, id.Description, id.CreatedBy,
		store.Time(id.CreatedAt), store.Time(id.ModifiedAt), 1)
	return err
}

func accountExists(tx *store.Tx, op, accountID string) error {
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM iam_accounts WHERE id = ?`, accountID).Scan(&n); err != nil {
		return errs.Internalf(op, err)
	}
	if n == 0 {
		return errs.Ef(op, errs.NotExist, "not_found", "The account %s does not exist", accountID)
	}
	return nil
}

// caller is the authenticated principal of ctx; IAM's management calls need one.
func caller(ctx context.Context, op string) (*auth.Principal, error) {
	p := auth.FromContext(ctx)
	if p == nil {
		return nil, errs.E(op, errs.Unauthenticated, "BXNIM0308E", "No authorization header found")
	}
	return p, nil
}

// mayManage allows a user to manage their own API keys (as IBM Cloud does) and
// anyone else only through a policy granting action on the owner's resource.
func (s *Service) mayManage(ctx context.Context, p *auth.Principal, action string, owner identity) error {
	if p.IAMID == owner.IAMID && p.Type != auth.Service {
		return nil
	}
	return s.Authorize(ctx, p, action, owner.resource())
}

func validName(op, field, v string, required bool) error {
	if required && strings.TrimSpace(v) == "" {
		return errs.Ef(op, errs.Invalid, "BXNIM0109E", "Property missing or empty. Property name(s): %s", field).On("field", field)
	}
	if utf8.RuneCountInString(v) > 1024 || !utf8.ValidString(v) {
		return errs.Ef(op, errs.Invalid, "BXNIM0109E", "Property %s must be valid text of at most 1024 characters", field).On("field", field)
	}
	return nil
}

// --- API keys ---

// APIKeyRequest creates an API key for the identity IAMID.
type APIKeyRequest struct {
	Name        string `json:"name"`
	IAMID       string `json:"iam_id"`
	Description string `json:"description,omitempty"`
	AccountID   string `json:"account_id,omitempty"`
	StoreValue  bool   `json:"store_value,omitempty"`
}

// apiKeyBytes is the entropy of a generated API key.
const apiKeyBytes = 32

// minAPIKeyLen bounds API keys given by an operator (Bootstrap), so that a
// short guessable value cannot become the administrator's credential.
const minAPIKeyLen = 32

func newAPIKeyValue() string {
	b := make([]byte, apiKeyBytes)
	if _, err := rand.Read(b); err != nil {
		panic("iam: no randomness: " + err.Error())
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// hashAPIKey is what is stored of a key: its value is 256 random bits, so one
// SHA-256 is enough to make the stored hash useless to an attacker.
func hashAPIKey(v string) []byte {
	h := sha256.Sum256([]byte(v))
	return h[:]
}

// iamCRN is the CRN of an IAM resource, or of the account's IAM service
// when id is "" (a list, or a create that was refused).
func iamCRN(service, account, resourceType, id string) string {
	c := crn.New(service, "", account, "")
	if id != "" {
		c = c.Child(resourceType, id)
	}
	return c.String()
}

func apiKeyCRN(account, id string) string {
	return iamCRN(ServiceIdentity, account, "apikey", id)
}

const apiKeyColumns = `id, account_id, iam_id, name, description, created_by, created_at, modified_at, version`

func scanAPIKey(row interface{ Scan(...any) error }) (APIKey, error) {
	var k APIKey
	var created, modified string
	var version int
	err := row.Scan(&k.ID, &k.AccountID, &k.IAMID, &k.Name, &k.Description, &k.CreatedBy, &created, &modified, &version)
	k.CreatedAt, k.ModifiedAt = store.ParseTime(created), store.ParseTime(modified)
	k.EntityTag = strconv.Itoa(version)
	k.CRN = apiKeyCRN(k.AccountID, k.ID)
	return k, err
}

// CreateAPIKey creates an API key for req.IAMID and returns it with its value,
// which is never available again. The caller must be the owner or hold a
// policy allowing iam-identity.apikey.create on the owner.
func (s *Service) CreateAPIKey(ctx context.Context, req APIKeyRequest) (APIKey, string, error) {
	const op = "iam.CreateAPIKey"
	p, err := caller(ctx, op)
	if err != nil {
		return APIKey{}, "", err
	}
	if err := validName(op, "name", req.Name, true); err != nil {
		return APIKey{}, "", err
	}
	if err := validName(op, "iam_id", req.IAMID, true); err != nil {
		return APIKey{}, "", err
	}
	if err := validName(op, "description", req.Description, false); err != nil {
		return APIKey{}, "", err
	}
	if req.StoreValue {
		return APIKey{}, "", errs.E(op, errs.Invalid, "BXNIM0109E", "store_value is not supported: Keyline stores only a hash of an API key").On("field", "store_value")
	}
	var owner identity
	err = s.db.Read(ctx, func(tx *store.Tx) error {
		owner, err = getIdentity(tx, op, req.IAMID)
		return err
	})
	if err != nil {
		return APIKey{}, "", err
	}
	if req.AccountID != "" && req.AccountID != owner.AccountID {
		return APIKey{}, "", errs.E(op, errs.Invalid, "BXNIM0109E", "account_id is not the account of the identity iam_id").On("field", "account_id")
	}
	target := auditTarget(apiKeyCRN(owner.AccountID, ""), req.Name, "iam-identity/apikey")
	if err := s.mayManage(ctx, p, ActionAPIKeyCreate, owner); err != nil {
		s.recordFailure(ctx, ActionAPIKeyCreate, target, err)
		return APIKey{}, "", err
	}
	value := newAPIKeyValue()
	key, err := s.insertAPIKey(ctx, owner, req.Name, req.Description, value, p.IAMID)
	if err != nil {
		return APIKey{}, "", err
	}
	return key, value, nil
}

// insertAPIKey stores a new key of owner with its audit event.
func (s *Service) insertAPIKey(ctx context.Context, owner identity, name, description, value, createdBy string) (APIKey, error) {
	const op = "iam.CreateAPIKey"
	var key APIKey
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		var err error
		key, err = insertAPIKeyTx(tx, owner, name, description, value, createdBy, s.clock.Now())
		if err != nil {
			return err
		}
		return s.record(ctx, tx, ActionAPIKeyCreate, auditTarget(key.CRN, key.Name, "iam-identity/apikey"), 201)
	})
	if err != nil {
		return APIKey{}, wrap(op, err)
	}
	return key, nil
}

func insertAPIKeyTx(tx *store.Tx, owner identity, name, description, value, createdBy string, now time.Time) (APIKey, error) {
	const op = "iam.CreateAPIKey"
	key := APIKey{ID: "ApiKey-" + uuid.NewString(), EntityTag: "1", CreatedAt: now, CreatedBy: createdBy, ModifiedAt: now,
		Name: name, Description: description, IAMID: owner.IAMID, AccountID: owner.AccountID}
	key.CRN = apiKeyCRN(key.AccountID, key.ID)
	_, err := tx.Exec(`INSERT INTO iam_apikeys (id, account_id, iam_id, name, description, hash, created_by, created_at, modified_at, version)
		VALUES (?,?,?,?,?,?,?,?,?,1)`, key.ID, key.AccountID, key.IAMID, key.Name, key.Description, hashAPIKey(value),
		createdBy, store.Time(now), store.Time(now))
	if store.IsUnique(err) {
		// Only an operator-chosen value can collide; say so without echoing it.
		return APIKey{}, errs.E(op, errs.Conflict, "conflict", "This API key value is already in use")
	}
	if err != nil {
		return APIKey{}, errs.Internalf(op, err)
	}
	return key, nil
}

func getAPIKey(tx *store.Tx, op, id string) (APIKey, error) {
	k, err := scanAPIKey(tx.QueryRow(`SELECT `+apiKeyColumns+` FROM iam_apikeys WHERE id = ?`, id))
	if store.IsNoRows(err) {
		return APIKey{}, errs.Ef(op, errs.NotExist, "not_found", "API key %s not found", id)
	}
	if err != nil {
		return APIKey{}, errs.Internalf(op, err)
	}
	return k, nil
}

// apiKeyWithOwner reads a key and its owner in one snapshot.
func (s *Service) apiKeyWithOwner(ctx context.Context, op, id string) (APIKey, identity, error) {
	var key APIKey
	var owner identity
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		if key, err = getAPIKey(tx, op, id); err != nil {
			return err
		}
		owner, err = getIdentity(tx, op, key.IAMID)
		return err
	})
	return key, owner, err
}

// GetAPIKey returns an API key's record (never its value).
func (s *Service) GetAPIKey(ctx context.Context, id string) (APIKey, error) {
	const op = "iam.GetAPIKey"
	p, err := caller(ctx, op)
	if err != nil {
		return APIKey{}, err
	}
	key, owner, err := s.apiKeyWithOwner(ctx, op, id)
	if err != nil {
		return APIKey{}, err
	}
	return s.readAPIKey(ctx, p, key, owner)
}

// APIKeyDetails returns the record of the API key whose value is apikey: the
// identity it belongs to and its account.
func (s *Service) APIKeyDetails(ctx context.Context, apikey string) (APIKey, error) {
	const op = "iam.APIKeyDetails"
	p, err := caller(ctx, op)
	if err != nil {
		return APIKey{}, err
	}
	key, owner, err := s.lookupAPIKey(ctx, op, apikey)
	if err != nil {
		return APIKey{}, err
	}
	return s.readAPIKey(ctx, p, key, owner)
}

// readAPIKey returns key to p if p may manage its owner, auditing the read
// or the refusal.
func (s *Service) readAPIKey(ctx context.Context, p *auth.Principal, key APIKey, owner identity) (APIKey, error) {
	target := auditTarget(key.CRN, key.Name, "iam-identity/apikey")
	if err := s.mayManage(ctx, p, ActionAPIKeyGet, owner); err != nil {
		s.recordFailure(ctx, ActionAPIKeyGet, target, err)
		return APIKey{}, err
	}
	s.recordRead(ctx, ActionAPIKeyGet, target)
	return key, nil
}

// lookupAPIKey finds a key by value. The lookup is by hash, so its timing
// says nothing about the value; the final comparison is constant-time anyway.
func (s *Service) lookupAPIKey(ctx context.Context, op, value string) (APIKey, identity, error) {
	notFound := errs.E(op, errs.Invalid, "BXNIM0415E", "Provided API key could not be found")
	if value == "" || len(value) > 512 {
		return APIKey{}, identity{}, notFound
	}
	h := hashAPIKey(value)
	var key APIKey
	var owner identity
	var stored []byte
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		row := tx.QueryRow(`SELECT hash, `+apiKeyColumns+` FROM iam_apikeys WHERE hash = ?`, h)
		var err error
		key, err = scanAPIKey(scanPrefix{row, &stored})
		if store.IsNoRows(err) {
			return notFound
		}
		if err != nil {
			return errs.Internalf(op, err)
		}
		owner, err = getIdentity(tx, op, key.IAMID)
		return err
	})
	if err != nil {
		return APIKey{}, identity{}, err
	}
	if subtle.ConstantTimeCompare(stored, h) != 1 {
		return APIKey{}, identity{}, notFound
	}
	return key, owner, nil
}

// scanPrefix scans one leading column into first and the rest into the caller's targets.
type scanPrefix struct {
	row   interface{ Scan(...any) error }
	first any
}

func (sp scanPrefix) Scan(dest ...any) error { return sp.row.Scan(append([]any{sp.first}, dest...)...) }

// APIKeyFilter selects API keys to list.
type APIKeyFilter struct {
	AccountID string
	IAMID     string // "" with Scope "entity" = the caller's own keys
	Scope     string // "entity" (default) or "account"
	Type      string // "user", "serviceid" or ""
	PageSize  int
	PageToken string
}

// APIKeyPage is one page of API keys.
type APIKeyPage struct {
	Offset  int      `json:"offset"`
	Limit   int      `json:"limit"`
	Next    string   `json:"-"`
	APIKeys []APIKey `json:"apikeys"`
}

// ListAPIKeys lists the caller's own keys, another identity's keys, or (scope
// "account") every key of the account the caller may list.
func (s *Service) ListAPIKeys(ctx context.Context, f APIKeyFilter) (APIKeyPage, error) {
	const op = "iam.ListAPIKeys"
	p, err := caller(ctx, op)
	if err != nil {
		return APIKeyPage{}, err
	}
	if f.AccountID == "" {
		f.AccountID = p.AccountID
	}
	limit, offset, err := pageParams(op, f.PageSize, f.PageToken, 20)
	if err != nil {
		return APIKeyPage{}, err
	}
	query := `SELECT ` + apiKeyColumns + ` FROM iam_apikeys k WHERE k.account_id = ?`
	args := []any{f.AccountID}
	target := auditTarget(apiKeyCRN(f.AccountID, ""), "", "iam-identity/apikey")
	switch f.Scope {
	case "", "entity":
		if f.IAMID == "" {
			f.IAMID = p.IAMID
		}
		var owner identity
		err := s.db.Read(ctx, func(tx *store.Tx) error {
			owner, err = getIdentity(tx, op, f.IAMID)
			return err
		})
		if err != nil {
			return APIKeyPage{}, err
		}
		if err := s.mayManage(ctx, p, ActionAPIKeyList, owner); err != nil {
			s.recordFailure(ctx, ActionAPIKeyList, target, err)
			return APIKeyPage{}, err
		}
		query += ` AND k.iam_id = ?`
		args = append(args, f.IAMID)
	case "account":
		r := auth.Resource{AccountID: f.AccountID, ServiceName: ServiceIdentity}
		if err := s.Authorize(ctx, p, ActionAPIKeyList, r); err != nil {
			s.recordFailure(ctx, ActionAPIKeyList, target, err)
			return APIKeyPage{}, err
		}
	default:
		return APIKeyPage{}, errs.E(op, errs.Invalid, "BXNIM0109E", "scope must be entity or account").On("query_param", "scope")
	}
	switch f.Type {
	case "":
	case kindUser, kindServiceID:
		query += ` AND k.iam_id IN (SELECT iam_id FROM iam_identities WHERE kind = ?)`
		args = append(args, f.Type)
	default:
		return APIKeyPage{}, errs.E(op, errs.Invalid, "BXNIM0109E", "type must be user or serviceid").On("query_param", "type")
	}
	query += ` ORDER BY k.created_at, k.id LIMIT ? OFFSET ?`
	args = append(args, limit+1, offset)
	page := APIKeyPage{Offset: offset, Limit: limit, APIKeys: []APIKey{}}
	err = s.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(query, args...)
		if err != nil {
			return errs.Internalf(op, err)
		}
		defer rows.Close()
		for rows.Next() {
			k, err := scanAPIKey(rows)
			if err != nil {
				return errs.Internalf(op, err)
			}
			page.APIKeys = append(page.APIKeys, k)
		}
		return rows.Err()
	})
	if err != nil {
		return APIKeyPage{}, wrap(op, err)
	}
	if len(page.APIKeys) > limit {
		page.APIKeys = page.APIKeys[:limit]
		page.Next = strconv.Itoa(offset + limit)
	}
	s.recordRead(ctx, ActionAPIKeyList, target)
	return page, nil
}

// pageParams checks a page size and an offset token.
func pageParams(op string, size int, token string, def int) (limit, offset int, err error) {
	limit = def
	if size != 0 {
		if size < 1 || size > 100 {
			return 0, 0, errs.E(op, errs.Invalid, "BXNIM0109E", "pagesize must be between 1 and 100").On("query_param", "pagesize")
		}
		limit = size
	}
	if token != "" {
		offset, err = strconv.Atoi(token)
		if err != nil || offset < 0 {
			return 0, 0, errs.E(op, errs.Invalid, "BXNIM0109E", "pagetoken is not a token this server issued").On("query_param", "pagetoken")
		}
	}
	return limit, offset, nil
}

// DeleteAPIKey deletes an API key; tokens issued for it stop working at once.
func (s *Service) DeleteAPIKey(ctx context.Context, id string) error {
	const op = "iam.DeleteAPIKey"
	p, err := caller(ctx, op)
	if err != nil {
		return err
	}
	key, owner, err := s.apiKeyWithOwner(ctx, op, id)
	if err != nil {
		return err
	}
	target := auditTarget(key.CRN, key.Name, "iam-identity/apikey")
	if err := s.mayManage(ctx, p, ActionAPIKeyDelete, owner); err != nil {
		s.recordFailure(ctx, ActionAPIKeyDelete, target, err)
		return err
	}
	return s.db.Tx(ctx, func(tx *store.Tx) error {
		res, err := tx.Exec(`DELETE FROM iam_apikeys WHERE id = ?`, id)
		if err != nil {
			return errs.Internalf(op, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.Ef(op, errs.NotExist, "not_found", "API key %s not found", id)
		}
		tx.OnCommit(func() { s.tokens.revoke(id, "") })
		tx.Changed(topicAPIKey, id)
		return s.record(ctx, tx, ActionAPIKeyDelete, target, 204)
	})
}

// --- service IDs ---

// ServiceIDRequest creates or updates a service ID.
type ServiceIDRequest struct {
	AccountID   string `json:"account_id"`
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

func serviceIDTarget(account, id, name string) audit.Target {
	return auditTarget(iamCRN(ServiceIdentity, account, "serviceid", id), name, "iam-identity/serviceid")
}

// CreateServiceID creates a service ID in req.AccountID.
func (s *Service) CreateServiceID(ctx context.Context, req ServiceIDRequest) (ServiceID, error) {
	const op = "iam.CreateServiceID"
	p, err := caller(ctx, op)
	if err != nil {
		return ServiceID{}, err
	}
	if err := validName(op, "account_id", req.AccountID, true); err != nil {
		return ServiceID{}, err
	}
	if err := validName(op, "name", req.Name, true); err != nil {
		return ServiceID{}, err
	}
	if err := validName(op, "description", req.Description, false); err != nil {
		return ServiceID{}, err
	}
	target := serviceIDTarget(req.AccountID, "", req.Name)
	if err := s.Authorize(ctx, p, ActionServiceIDCreate, auth.Resource{AccountID: req.AccountID, ServiceName: ServiceIdentity}); err != nil {
		s.recordFailure(ctx, ActionServiceIDCreate, target, err)
		return ServiceID{}, err
	}
	now := s.clock.Now()
	u := uuid.NewString()
	id := identity{IAMID: "iam-ServiceId-" + u, ID: "ServiceId-" + u, AccountID: req.AccountID, Kind: kindServiceID,
		Name: req.Name, Description: req.Description, CreatedBy: p.IAMID, CreatedAt: now, ModifiedAt: now, Version: 1}
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := accountExists(tx, op, req.AccountID); err != nil {
			return err
		}
		if err := insertIdentity(tx, id); err != nil {
			return errs.Internalf(op, err)
		}
		return s.record(ctx, tx, ActionServiceIDCreate, serviceIDTarget(id.AccountID, id.ID, id.Name), 201)
	})
	if err != nil {
		return ServiceID{}, err
	}
	return id.serviceID(), nil
}

// serviceIDByID reads a service ID by its "ServiceId-..." id.
func (s *Service) serviceIDByID(ctx context.Context, op, id string) (identity, error) {
	var sid identity
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		sid, err = scanIdentity(tx.QueryRow(`SELECT `+identityColumns+` FROM iam_identities WHERE id = ? AND kind = ?`, id, kindServiceID))
		if store.IsNoRows(err) {
			return errs.Ef(op, errs.NotExist, "not_found", "Service ID %s not found", id)
		}
		if err != nil {
			return errs.Internalf(op, err)
		}
		return nil
	})
	return sid, err
}

// GetServiceID returns a service ID.
func (s *Service) GetServiceID(ctx context.Context, id string) (ServiceID, error) {
	const op = "iam.GetServiceID"
	p, err := caller(ctx, op)
	if err != nil {
		return ServiceID{}, err
	}
	sid, err := s.serviceIDByID(ctx, op, id)
	if err != nil {
		return ServiceID{}, err
	}
	target := serviceIDTarget(sid.AccountID, sid.ID, sid.Name)
	if err := s.Authorize(ctx, p, ActionServiceIDGet, sid.resource()); err != nil {
		s.recordFailure(ctx, ActionServiceIDGet, target, err)
		return ServiceID{}, err
	}
	s.recordRead(ctx, ActionServiceIDGet, target)
	return sid.serviceID(), nil
}

// ListServiceIDs lists the service IDs of an account that the caller may read.
func (s *Service) ListServiceIDs(ctx context.Context, accountID, name string) ([]ServiceID, error) {
	const op = "iam.ListServiceIDs"
	p, err := caller(ctx, op)
	if err != nil {
		return nil, err
	}
	if err := validName(op, "account_id", accountID, true); err != nil {
		return nil, errs.As(err).On("query_param", "account_id")
	}
	var all []identity
	err = s.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT `+identityColumns+` FROM iam_identities WHERE account_id = ? AND kind = ? ORDER BY created_at, id`, accountID, kindServiceID)
		if err != nil {
			return errs.Internalf(op, err)
		}
		defer rows.Close()
		for rows.Next() {
			id, err := scanIdentity(rows)
			if err != nil {
				return errs.Internalf(op, err)
			}
			if name == "" || id.Name == name {
				all = append(all, id)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	out := []ServiceID{}
	for _, id := range all {
		if s.Authorize(ctx, p, ActionServiceIDGet, id.resource()) == nil {
			out = append(out, id.serviceID())
		}
	}
	s.recordRead(ctx, ActionServiceIDGet, serviceIDTarget(accountID, "", ""))
	return out, nil
}

// UpdateServiceID changes a service ID's name and description; ifMatch, when
// not "" or "*", must be its current entity tag.
func (s *Service) UpdateServiceID(ctx context.Context, id, ifMatch string, req ServiceIDRequest) (ServiceID, error) {
	const op = "iam.UpdateServiceID"
	p, err := caller(ctx, op)
	if err != nil {
		return ServiceID{}, err
	}
	if err := validName(op, "name", req.Name, false); err != nil {
		return ServiceID{}, err
	}
	if err := validName(op, "description", req.Description, false); err != nil {
		return ServiceID{}, err
	}
	sid, err := s.serviceIDByID(ctx, op, id)
	if err != nil {
		return ServiceID{}, err
	}
	target := serviceIDTarget(sid.AccountID, sid.ID, sid.Name)
	if err := s.Authorize(ctx, p, ActionServiceIDUpdate, sid.resource()); err != nil {
		s.recordFailure(ctx, ActionServiceIDUpdate, target, err)
		return ServiceID{}, err
	}
	if req.Name != "" {
		sid.Name = req.Name
	}
	if req.Description != "" {
		sid.Description = req.Description
	}
	sid.ModifiedAt = s.clock.Now()
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		q := `UPDATE iam_identities SET name = ?, description = ?, modified_at = ?, version = version + 1 WHERE iam_id = ?`
		args := []any{sid.Name, sid.Description, store.Time(sid.ModifiedAt), sid.IAMID}
		if ifMatch != "" && ifMatch != "*" {
			v, err := strconv.Atoi(ifMatch)
			if err != nil {
				v = -1 // matches no version
			}
			q += ` AND version = ?`
			args = append(args, v)
		}
		res, err := tx.Exec(q, args...)
		if err != nil {
			return errs.Internalf(op, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.E(op, errs.Conflict, "conflict", "The service ID was changed since it was read: its entity tag no longer matches If-Match")
		}
		if err := tx.QueryRow(`SELECT version FROM iam_identities WHERE iam_id = ?`, sid.IAMID).Scan(&sid.Version); err != nil {
			return errs.Internalf(op, err)
		}
		return s.record(ctx, tx, ActionServiceIDUpdate, target, 200)
	})
	if err != nil {
		return ServiceID{}, err
	}
	return sid.serviceID(), nil
}

// DeleteServiceID deletes a service ID with its API keys (their tokens stop
// working at once) and its access policies.
func (s *Service) DeleteServiceID(ctx context.Context, id string) error {
	const op = "iam.DeleteServiceID"
	p, err := caller(ctx, op)
	if err != nil {
		return err
	}
	sid, err := s.serviceIDByID(ctx, op, id)
	if err != nil {
		return err
	}
	target := serviceIDTarget(sid.AccountID, sid.ID, sid.Name)
	if err := s.Authorize(ctx, p, ActionServiceIDDelete, sid.resource()); err != nil {
		s.recordFailure(ctx, ActionServiceIDDelete, target, err)
		return err
	}
	return s.deleteIdentity(ctx, op, sid, p.IAMID, ActionServiceIDDelete, target)
}

// deleteIdentity removes an identity with its API keys (their tokens stop
// working at once) and its access policies, in one transaction with its event.
func (s *Service) deleteIdentity(ctx context.Context, op string, id identity, by, action string, target audit.Target) error {
	return s.db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`DELETE FROM iam_apikeys WHERE iam_id = ?`, id.IAMID); err != nil {
			return errs.Internalf(op, err)
		}
		res, err := tx.Exec(`DELETE FROM iam_identities WHERE iam_id = ?`, id.IAMID)
		if err != nil {
			return errs.Internalf(op, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.Ef(op, errs.NotExist, "not_found", "%s was not found", id.IAMID)
		}
		if err := s.deleteSubjectPoliciesTx(ctx, tx, id.IAMID, by); err != nil {
			return err
		}
		tx.OnCommit(func() { s.tokens.revoke("", id.IAMID) })
		tx.Changed(topicIdentity, id.IAMID)
		return s.record(ctx, tx, action, target, 204)
	})
}

// --- users ---

// InviteUser adds a user with the given email to an account. Keyline has no
// mail: the user exists at once and signs in with API keys an administrator
// creates for them.
func (s *Service) InviteUser(ctx context.Context, accountID, email string) (User, error) {
	const op = "iam.InviteUser"
	p, err := caller(ctx, op)
	if err != nil {
		return User{}, err
	}
	email = strings.TrimSpace(email)
	if err := validName(op, "email", email, true); err != nil {
		return User{}, err
	}
	if at := strings.IndexByte(email, '@'); at < 1 || at == len(email)-1 || strings.ContainsAny(email, " \t\r\n<>") {
		return User{}, errs.E(op, errs.Invalid, "BXNIM0109E", "email must be an email address").On("field", "email")
	}
	target := auditTarget(iamCRN(ServiceUserManagement, accountID, "user", ""), email, "user-management/user")
	if err := s.Authorize(ctx, p, ActionUserInvite, auth.Resource{AccountID: accountID, ServiceName: ServiceUserManagement}); err != nil {
		s.recordFailure(ctx, ActionUserInvite, target, err)
		return User{}, err
	}
	var u identity
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := accountExists(tx, op, accountID); err != nil {
			return err
		}
		var err error
		u, err = insertUserTx(tx, op, accountID, email, email, p.IAMID, s.clock.Now())
		if err != nil {
			return err
		}
		return s.record(ctx, tx, ActionUserInvite, auditTarget(iamCRN(ServiceUserManagement, accountID, "user", u.IAMID), email, "user-management/user"), 201)
	})
	if err != nil {
		return User{}, err
	}
	return u.user(), nil
}

func insertUserTx(tx *store.Tx, op, accountID, email, name, createdBy string, now time.Time) (identity, error) {
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM iam_identities WHERE account_id = ? AND kind = ? AND email = ?`, accountID, kindUser, email).Scan(&n); err != nil {
		return identity{}, errs.Internalf(op, err)
	}
	if n > 0 {
		return identity{}, errs.Ef(op, errs.Conflict, "user_exists", "A user with email %s is already in the account", email)
	}
	u := identity{IAMID: "IBMid-" + strings.ToUpper(randomHex(6)), ID: uuid.NewString(), AccountID: accountID, Kind: kindUser,
		Name: name, Email: email, CreatedBy: createdBy, CreatedAt: now, ModifiedAt: now, Version: 1}
	if err := insertIdentity(tx, u); err != nil {
		return identity{}, errs.Internalf(op, err)
	}
	return u, nil
}

// ListUsers lists the users of an account.
func (s *Service) ListUsers(ctx context.Context, accountID string) ([]User, error) {
	const op = "iam.ListUsers"
	p, err := caller(ctx, op)
	if err != nil {
		return nil, err
	}
	target := auditTarget(iamCRN(ServiceUserManagement, accountID, "user", ""), "", "user-management/user")
	if err := s.Authorize(ctx, p, ActionUserRead, auth.Resource{AccountID: accountID, ServiceName: ServiceUserManagement}); err != nil {
		s.recordFailure(ctx, ActionUserRead, target, err)
		return nil, err
	}
	users := []User{}
	err = s.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT `+identityColumns+` FROM iam_identities WHERE account_id = ? AND kind = ? ORDER BY created_at, iam_id`, accountID, kindUser)
		if err != nil {
			return errs.Internalf(op, err)
		}
		defer rows.Close()
		for rows.Next() {
			id, err := scanIdentity(rows)
			if err != nil {
				return errs.Internalf(op, err)
			}
			users = append(users, id.user())
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	s.recordRead(ctx, ActionUserRead, target)
	return users, nil
}

// RemoveUser removes a user from an account with their API keys and access
// policies; their tokens stop working at once. Nobody can remove themselves,
// so an account cannot lose its last administrator by accident.
func (s *Service) RemoveUser(ctx context.Context, accountID, iamID string) error {
	const op = "iam.RemoveUser"
	p, err := caller(ctx, op)
	if err != nil {
		return err
	}
	target := auditTarget(iamCRN(ServiceUserManagement, accountID, "user", iamID), iamID, "user-management/user")
	if err := s.Authorize(ctx, p, ActionUserRemove, auth.Resource{AccountID: accountID, ServiceName: ServiceUserManagement}); err != nil {
		s.recordFailure(ctx, ActionUserRemove, target, err)
		return err
	}
	if iamID == p.IAMID {
		return errs.E(op, errs.Conflict, "cannot_remove_self", "You cannot remove yourself from the account")
	}
	var u identity
	err = s.db.Read(ctx, func(tx *store.Tx) error {
		u, err = getIdentity(tx, op, iamID)
		return err
	})
	if err != nil {
		return err
	}
	if u.Kind != kindUser || u.AccountID != accountID {
		return errs.Ef(op, errs.NotExist, "not_found", "User %s is not in account %s", iamID, accountID)
	}
	return s.deleteIdentity(ctx, op, u, p.IAMID, ActionUserRemove, target)
}
