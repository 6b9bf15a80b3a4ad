// Package iam is Keyline's identity and access management: accounts, users,
// service IDs and their API keys, the bearer tokens exchanged for them, and
// the access and service-to-service authorization policies that every other
// service consults through auth.Authorizer.
//
// API keys are 256 random bits shown once; only their SHA-256 is stored.
// Tokens are RS256 JWTs signed by a key generated on first start and kept
// sealed under the master key in the database, so every node sharing it
// signs with the same key and accepts the others' tokens; verified tokens are cached by their hash until
// they expire, and deleting an API key or identity evicts its tokens in the
// same call. Policies live in the database and in an immutable in-memory
// index that each committed change replaces before the change returns, so
// Authorize reads no database and a revocation stops the very next call.
// A source service holding AuthorizationDelegator on a target may authorize
// its dependent services there (CreateDependentAuthorization); those
// authorizations are "created by" the source instance's CRN.
package iam

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// Config holds what the IAM service is built from.
type Config struct {
	DB     *store.DB
	Master *seal.AEAD // seals the token signing key at rest
	Audit  *audit.Log // every IAM call becomes an event
	Clock  clock.Clock
	Logger *slog.Logger
	// Issuer is the "iss" claim of the tokens and the base of policy hrefs,
	// e.g. "https://keyline.example:8443". Defaults to "https://iam.keyline.local".
	Issuer string
}

// Service is the IAM service. It implements auth.Authenticator and auth.Authorizer.
type Service struct {
	db     *store.DB
	master *seal.AEAD
	audit  *audit.Log
	clock  clock.Clock
	logger *slog.Logger
	issuer string

	signing atomic.Pointer[signingKeys]
	// keysReadAt (UnixNano) is when a token naming an unknown key id last
	// made the keys be read again: at most once per unknownKidReload.
	keysReadAt atomic.Int64
	rotating   atomic.Bool // a signing key replacement is under way
	tokens     *tokenCache
	// feed keeps the caches true when other nodes share the database
	// (JoinCluster); nil: this process is alone.
	feed *cluster.Feed

	policyMu sync.Mutex // serialises index updates
	policies policyIndexRef

	hookMu               sync.Mutex
	authorizationDeleted []func(Policy)
}

var migrations = []store.Migration{{ID: "iam/0001", SQL: `
CREATE TABLE iam_accounts (
	id         TEXT PRIMARY KEY,
	name       TEXT NOT NULL,
	created_at TEXT NOT NULL
);
CREATE TABLE iam_identities (
	iam_id      TEXT PRIMARY KEY,
	id          TEXT NOT NULL UNIQUE,
	account_id  TEXT NOT NULL REFERENCES iam_accounts(id),
	kind        TEXT NOT NULL,
	name        TEXT NOT NULL,
	email       TEXT NOT NULL DEFAULT '',
	description TEXT NOT NULL DEFAULT '',
	created_by  TEXT NOT NULL DEFAULT '',
	created_at  TEXT NOT NULL,
	modified_at TEXT NOT NULL,
	version     INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX iam_identities_account ON iam_identities(account_id, kind);
CREATE TABLE iam_apikeys (
	id          TEXT PRIMARY KEY,
	account_id  TEXT NOT NULL REFERENCES iam_accounts(id),
	iam_id      TEXT NOT NULL REFERENCES iam_identities(iam_id),
	name        TEXT NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	hash        BLOB NOT NULL UNIQUE,
	created_by  TEXT NOT NULL DEFAULT '',
	created_at  TEXT NOT NULL,
	modified_at TEXT NOT NULL,
	version     INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX iam_apikeys_owner ON iam_apikeys(iam_id);
CREATE TABLE iam_signing_keys (
	kid        TEXT PRIMARY KEY,
	sealed     BLOB NOT NULL,
	created_at TEXT NOT NULL
);
CREATE TABLE iam_policies (
	id         TEXT PRIMARY KEY,
	account_id TEXT NOT NULL,
	type       TEXT NOT NULL,
	state      TEXT NOT NULL,
	version    INTEGER NOT NULL,
	doc        TEXT NOT NULL,
	created_at TEXT NOT NULL
);
CREATE TABLE iam_settings (
	name  TEXT PRIMARY KEY,
	value TEXT NOT NULL
)`}}

// New opens the IAM service on cfg.DB: it applies its migrations, loads (or
// on first start generates and seals) the token signing key, and loads the
// policies into the in-memory index that Authorize reads.
func New(ctx context.Context, cfg Config) (*Service, error) {
	const op = "iam.New"
	if cfg.DB == nil || cfg.Master == nil || cfg.Clock == nil || cfg.Audit == nil {
		return nil, errs.E(op, errs.Internal, "CONFIG_ERR", "iam needs a database, a master key, a clock and the audit log")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Issuer == "" {
		cfg.Issuer = "https://iam.keyline.local"
	}
	s := &Service{db: cfg.DB, master: cfg.Master, audit: cfg.Audit, clock: cfg.Clock, logger: cfg.Logger,
		issuer: strings.TrimSuffix(cfg.Issuer, "/"), tokens: newTokenCache()}
	if err := s.db.Migrate(ctx, migrations); err != nil {
		return nil, errs.Internalf(op, err)
	}
	if err := s.loadSigningKeys(ctx); err != nil {
		return nil, err
	}
	if err := s.loadPolicies(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Issuer is the token issuer and the base URL of policy hrefs.
func (s *Service) Issuer() string { return s.issuer }

// randomHex returns n random bytes as lowercase hex.
func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("iam: no randomness: " + err.Error())
	}
	return hex.EncodeToString(b)
}

// wrap passes Keyline errors through and hides anything else behind an internal error.
func wrap(op string, err error) error {
	if err == nil || errs.As(err) != nil {
		return err
	}
	return errs.Internalf(op, err)
}
