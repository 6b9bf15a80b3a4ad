package server

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// Auto-unseal modes: the unseal key (which seals the keyring of master
// keys) is wrapped by a key kept elsewhere and unwrapped at every start.
const (
	SealPKCS11 = "pkcs11" // by an AES key in an HSM reached over PKCS#11
	SealKMS    = "kms"    // by a root key of a Key Protect-compatible service
)

// UnsealSecrets are the credentials of the auto-unseal modes, given to
// `keyline serve` and `keyline operator init|migrate` from a file or the
// environment. They are never stored.
type UnsealSecrets struct {
	PKCS11PIN string
	KMSAPIKey string
}

// The auto-unseal parameters (never a secret) and the wrapped unseal key
// (before the keyring form: the wrapped master key), in a table of their
// own beside seal_config.
var autoUnsealMigrations = []store.Migration{{ID: "sealmodes/0001", SQL: `
CREATE TABLE seal_autounseal (
	id          INTEGER PRIMARY KEY,
	params      TEXT NOT NULL,
	wrapped_key BLOB NOT NULL
);
`}}

// autoUnseal is the seal_autounseal row.
type autoUnseal struct {
	PKCS11 *seal.PKCS11Config `json:"pkcs11,omitempty"`
	KMS    *seal.KMSConfig    `json:"kms,omitempty"`
	// Wrapped is the unseal key as the HSM or KMS wrapped it (when
	// seal_config has no keyring: the master key itself).
	Wrapped []byte `json:"-"`
}

func readAutoUnseal(ctx context.Context, db *store.DB) (*autoUnseal, error) {
	var params string
	var a autoUnseal
	err := db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT params, wrapped_key FROM seal_autounseal WHERE id = 1`).Scan(&params, &a.Wrapped)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errors.New("the auto-unseal parameters are missing from the database")
	}
	if err != nil {
		return nil, fmt.Errorf("read the auto-unseal parameters: %w", err)
	}
	if err := json.Unmarshal([]byte(params), &a); err != nil {
		return nil, fmt.Errorf("read the auto-unseal parameters: %w", err)
	}
	return &a, nil
}

// writeSealTarget records a new seal in one transaction: the mode, key
// check and keyring, and for an auto-unseal mode its parameters and
// wrapped unseal key.
func writeSealTarget(ctx context.Context, db *store.DB, c sealConfig, a *autoUnseal, now time.Time) error {
	return db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`DELETE FROM seal_autounseal`); err != nil {
			return err
		}
		if a != nil {
			if err := writeAutoUnsealTx(tx, a); err != nil {
				return err
			}
		}
		return writeSealConfigTx(tx, c, now)
	})
}

func writeAutoUnsealTx(tx *store.Tx, a *autoUnseal) error {
	params, err := json.Marshal(a)
	if err != nil {
		return err
	}
	_, err = tx.Exec(`INSERT INTO seal_autounseal (id, params, wrapped_key) VALUES (1, ?, ?)
		ON CONFLICT (id) DO UPDATE SET params = excluded.params, wrapped_key = excluded.wrapped_key`, string(params), a.Wrapped)
	return err
}

// wrapper opens the HSM or KMS key of a, with the secrets given.
func (a *autoUnseal) wrapper(secrets UnsealSecrets, create bool) (seal.KeyWrapper, error) {
	switch {
	case a.PKCS11 != nil:
		p := *a.PKCS11
		p.PIN = secrets.PKCS11PIN
		return seal.OpenPKCS11(p, create)
	case a.KMS != nil:
		k := *a.KMS
		k.APIKey = secrets.KMSAPIKey
		return seal.OpenKMS(k)
	}
	return nil, errors.New("the auto-unseal parameters name neither an HSM nor a KMS")
}

// unwrapSecret unwraps the secret an auto-unseal database keeps wrapped:
// its unseal key (the keyring form), or its master key itself when the
// directory was sealed before the keyring form. c.openKeyring checks it.
func unwrapSecret(ctx context.Context, db *store.DB, secrets UnsealSecrets) ([]byte, error) {
	if err := db.Migrate(ctx, autoUnsealMigrations); err != nil {
		return nil, err
	}
	a, err := readAutoUnseal(ctx, db)
	if err != nil {
		return nil, err
	}
	w, err := a.wrapper(secrets, false)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	return w.Unwrap(ctx, a.Wrapped)
}

// openAutoUnsealKeyring opens the master keys of an auto-unseal database.
func openAutoUnsealKeyring(ctx context.Context, db *store.DB, c *sealConfig, secrets UnsealSecrets) (*seal.Keyring, *seal.AEAD, error) {
	secret, err := unwrapSecret(ctx, db, secrets)
	if err != nil {
		return nil, nil, err
	}
	defer seal.Wipe(secret)
	ring, unsealKey, err := c.openKeyring(secret)
	if err != nil {
		return nil, nil, fmt.Errorf("%s seal: what the %s unwrapped does not open this database's keyring", c.Mode, c.Mode)
	}
	return ring, unsealKey, nil
}

// openAutoUnseal unseals at start through the HSM or KMS; when it cannot,
// the start fails with the cause.
func (s *Server) openAutoUnseal(ctx context.Context, c *sealConfig) error {
	if _, err := os.Stat(s.cfg.MasterKeyFile); err == nil {
		return fmt.Errorf("%s is beside a %s-sealed database: a master key must not be kept in the data directory; remove the file", s.cfg.MasterKeyFile, c.Mode)
	}
	ring, unsealKey, err := openAutoUnsealKeyring(ctx, s.db, c, s.cfg.Unseal)
	if err != nil {
		return fmt.Errorf("Keyline stays sealed: %w", err)
	}
	s.barrier = &barrier{cfg: *c}
	if err := s.unsealWith(ctx, ring, unsealKey); err != nil {
		return err
	}
	if unsealKey == nil {
		s.cfg.Logger.Warn("this " + c.Mode + " seal wraps the master key itself (a data directory from before the keyring form): " +
			"run `keyline operator rekey` to move it to a keyring under a new unseal key before rotating the master key")
	}
	s.cfg.Logger.Info("Keyline is unsealed by its " + c.Mode + " seal")
	return nil
}

// SealTarget is the seal `keyline operator init` or `migrate` puts a data
// directory under.
type SealTarget struct {
	Mode              string
	Shares, Threshold int               // shamir
	PKCS11            seal.PKCS11Config // pkcs11; its PIN is used, never stored
	KMS               seal.KMSConfig    // kms; its API key is used, never stored
}

// InitSeal seals a data directory with target, keeping its keyring of
// master keys (and so every key and record) when it has one: a new
// directory gets a fresh master key and its admin API key; a dev one loses
// its key file; a shamir one needs the threshold of unseal key shares; an
// auto-unseal one needs the secrets of its current HSM or KMS in
// cfg.Unseal. The PIN or API key of the target are in target itself.
// Every seal protects a fresh unseal key, which seals the keyring: shamir
// splits it, pkcs11 and kms wrap it. The old shares or wrapped key open
// nothing afterwards.
func InitSeal(ctx context.Context, cfg Config, target SealTarget, shares []string) (InitResult, error) {
	cfg = withDefaults(cfg)
	var res InitResult
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return res, fmt.Errorf("data directory: %w", err)
	}
	db, err := store.Open(ctx, cfg.DataDir, cfg.DatabaseURL)
	if err != nil {
		return res, err
	}
	defer db.Close()
	if err := db.Migrate(ctx, sealMigrations); err != nil {
		return res, err
	}
	if err := db.Migrate(ctx, autoUnsealMigrations); err != nil {
		return res, err
	}
	existing, err := readSealConfig(ctx, db)
	if err != nil {
		return res, err
	}
	if existing != nil && existing.Mode == target.Mode && target.Mode == SealShamir {
		return res, errors.New("this data directory is sealed with shamir already: `keyline operator rekey` makes new shares")
	}
	ring, err := currentKeyring(ctx, cfg, db, existing, shares)
	if err != nil {
		return res, err
	}
	defer ring.Wipe()
	if existing != nil {
		res.Migrated, res.From = true, existing.Mode
	} else if _, statErr := os.Stat(cfg.MasterKeyFile); statErr == nil {
		res.Migrated, res.From = true, SealDev
	}
	rawUnseal := seal.RandomKey()
	defer seal.Wipe(rawUnseal)
	unsealKey, err := seal.New(rawUnseal)
	if err != nil {
		return res, err
	}
	c := sealConfig{Mode: target.Mode, KeyCheck: unsealKey.Seal(keyCheckPlain, keyCheckAAD)}
	var auto *autoUnseal
	switch target.Mode {
	case SealShamir:
		split, err := seal.Split(rawUnseal, target.Shares, target.Threshold)
		if err != nil {
			return res, err
		}
		for _, sh := range split {
			res.Shares = append(res.Shares, sh.String())
		}
		c.Shares, c.Threshold = target.Shares, target.Threshold
	case SealPKCS11, SealKMS:
		if auto, err = target.autoUnseal(); err == nil {
			err = auto.wrapChecked(ctx, UnsealSecrets{PKCS11PIN: target.PKCS11.PIN, KMSAPIKey: target.KMS.APIKey}, true, rawUnseal)
		}
		if err != nil {
			return res, err
		}
	default:
		return res, fmt.Errorf("unknown seal %q: use shamir, pkcs11 or kms", target.Mode)
	}
	if c.Keyring, err = ring.SealWith(unsealKey); err != nil {
		return res, err
	}
	log, err := audit.New(ctx, db, cfg.Clock, cfg.Logger)
	if err != nil {
		return res, err
	}
	defer log.Close()
	iamSvc, err := iam.New(ctx, iam.Config{DB: db, Master: ring.AEAD(), Clock: cfg.Clock, Logger: cfg.Logger, Audit: log})
	if err != nil {
		return res, err
	}
	account, apikey, created, err := iamSvc.Bootstrap(ctx, cfg.AdminAPIKey)
	if err != nil {
		return res, err
	} else if created {
		res.AdminAPIKey = apikey
	}
	if err := writeSealTarget(ctx, db, c, auto, cfg.Clock.Now()); err != nil {
		return res, err
	}
	recordOperatorEvent(ctx, log, cfg.Logger, account.ID, "keyline.sys.init", map[string]any{"seal": target.Mode,
		"shares": c.Shares, "threshold": c.Threshold, "migrated": res.Migrated, "migrated_from": res.From})
	if res.From == SealDev {
		if err := os.Remove(cfg.MasterKeyFile); err != nil {
			return res, fmt.Errorf("the database is sealed with %s now, but %s could not be removed: remove it: %w", target.Mode, cfg.MasterKeyFile, err)
		}
	}
	return res, nil
}

// currentKeyring is the keyring of master keys of the directory as it is
// sealed now, or a fresh one for a new directory. A dev directory, and one
// sealed before the keyring form (its shares or wrapped key are the master
// key), has a keyring of that one key, version seal.LegacyVersion.
func currentKeyring(ctx context.Context, cfg Config, db *store.DB, existing *sealConfig, shares []string) (*seal.Keyring, error) {
	if existing == nil {
		if _, err := os.Stat(cfg.MasterKeyFile); err != nil {
			key := seal.RandomKey()
			defer seal.Wipe(key)
			return seal.NewKeyring(seal.LegacyVersion, key)
		}
		existing = &sealConfig{Mode: SealDev}
	}
	switch existing.Mode {
	case SealDev:
		key, err := seal.ReadMasterKey(cfg.MasterKeyFile)
		if err != nil {
			return nil, err
		}
		defer seal.Wipe(key)
		if master, _ := seal.New(key); existing.KeyCheck != nil && !existing.checkKey(master) {
			return nil, fmt.Errorf("%s is not the master key of this database", cfg.MasterKeyFile)
		}
		return seal.NewKeyring(seal.LegacyVersion, key)
	case SealShamir:
		if len(shares) < existing.Threshold {
			return nil, fmt.Errorf("this data directory is sealed with shamir: give %d of its %d unseal key shares to move it to another seal (%d given)", existing.Threshold, existing.Shares, len(shares))
		}
		var parsed []seal.Share
		for _, text := range shares {
			sh, err := seal.ParseShare(text)
			if err != nil {
				return nil, err
			}
			parsed = append(parsed, sh)
		}
		secret, err := seal.Combine(parsed)
		if err != nil {
			return nil, err
		}
		defer seal.Wipe(secret)
		ring, _, err := existing.openKeyring(secret)
		if err != nil {
			return nil, errors.New("the unseal key shares given do not open this data directory's keyring")
		}
		return ring, nil
	case SealPKCS11, SealKMS:
		ring, _, err := openAutoUnsealKeyring(ctx, db, existing, cfg.Unseal)
		return ring, err
	}
	return nil, fmt.Errorf("this data directory is sealed with %q, which this Keyline does not know", existing.Mode)
}

// autoUnseal is the seal_autounseal row of an auto-unseal target, before
// its key is wrapped.
func (t SealTarget) autoUnseal() (*autoUnseal, error) {
	a := &autoUnseal{}
	switch t.Mode {
	case SealPKCS11:
		p := t.PKCS11
		p.PIN = ""
		a.PKCS11 = &p
	case SealKMS:
		k := t.KMS
		k.APIKey = ""
		a.KMS = &k
	default:
		return nil, fmt.Errorf("%s is not an auto-unseal seal", t.Mode)
	}
	return a, nil
}

// wrapChecked wraps key (the unseal key) with a's HSM or KMS key (create:
// generating the HSM key when the token has none of that label) into
// a.Wrapped, and unwraps it once to prove the way back before anything is
// written.
func (a *autoUnseal) wrapChecked(ctx context.Context, secrets UnsealSecrets, create bool, key []byte) error {
	mode := SealPKCS11
	if a.KMS != nil {
		mode = SealKMS
	}
	w, err := a.wrapper(secrets, create)
	if err != nil {
		return err
	}
	defer w.Close()
	wrapped, err := w.Wrap(ctx, key)
	if err != nil {
		return err
	}
	back, err := w.Unwrap(ctx, wrapped)
	if err != nil {
		return fmt.Errorf("%s seal: the unseal key was wrapped but does not unwrap: %w", mode, err)
	}
	defer seal.Wipe(back)
	if subtle.ConstantTimeCompare(back, key) != 1 {
		return fmt.Errorf("%s seal: the unseal key does not come back unwrapped as it was", mode)
	}
	a.Wrapped = wrapped
	return nil
}

// ReadSealMode says how a data directory is sealed, with the server
// stopped: Type is empty for a new directory.
func ReadSealMode(ctx context.Context, cfg Config) (SealStatus, error) {
	cfg = withDefaults(cfg)
	db, err := store.Open(ctx, cfg.DataDir, cfg.DatabaseURL)
	if err != nil {
		return SealStatus{}, err
	}
	defer db.Close()
	if err := db.Migrate(ctx, sealMigrations); err != nil {
		return SealStatus{}, err
	}
	c, err := readSealConfig(ctx, db)
	if err != nil || c == nil {
		return SealStatus{}, err
	}
	b := barrier{cfg: *c, sealed: c.Mode != SealDev}
	return b.status(), nil
}
