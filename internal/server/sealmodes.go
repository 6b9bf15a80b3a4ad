package server

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// Auto-unseal modes: the master key is wrapped by a key kept elsewhere and
// unwrapped at every start.
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

// The auto-unseal parameters (never a secret) and the wrapped master key,
// in a table of their own beside seal_config.
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
	// Wrapped is the master key as the HSM or KMS wrapped it.
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

// writeSealTarget records a new seal in one transaction: the mode and key
// check, and for an auto-unseal mode its parameters and wrapped key.
func writeSealTarget(ctx context.Context, db *store.DB, c sealConfig, a *autoUnseal, now string) error {
	return db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`DELETE FROM seal_autounseal`); err != nil {
			return err
		}
		if a != nil {
			params, err := json.Marshal(a)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(`INSERT INTO seal_autounseal (id, params, wrapped_key) VALUES (1, ?, ?)`, string(params), a.Wrapped); err != nil {
				return err
			}
		}
		_, err := tx.Exec(`INSERT INTO seal_config (id, mode, shares, threshold, key_check, created_at) VALUES (1, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, shares = excluded.shares, threshold = excluded.threshold,
			key_check = excluded.key_check, created_at = excluded.created_at`,
			c.Mode, c.Shares, c.Threshold, c.KeyCheck, now)
		return err
	})
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

// unwrapMasterKey rebuilds the master key of an auto-unseal database and
// checks it against the key check.
func unwrapMasterKey(ctx context.Context, db *store.DB, c *sealConfig, secrets UnsealSecrets) ([]byte, error) {
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
	key, err := w.Unwrap(ctx, a.Wrapped)
	if err != nil {
		return nil, err
	}
	master, err := seal.New(key)
	if err != nil || !c.checkKey(master) {
		seal.Wipe(key)
		return nil, fmt.Errorf("%s seal: what the %s unwrapped is not this database's master key", c.Mode, c.Mode)
	}
	return key, nil
}

// openAutoUnseal unseals at start through the HSM or KMS; when it cannot,
// the start fails with the cause.
func (s *Server) openAutoUnseal(ctx context.Context, c *sealConfig) error {
	if _, err := os.Stat(s.cfg.MasterKeyFile); err == nil {
		return fmt.Errorf("%s is beside a %s-sealed database: a master key must not be kept in the data directory; remove the file", s.cfg.MasterKeyFile, c.Mode)
	}
	key, err := unwrapMasterKey(ctx, s.db, c, s.cfg.Unseal)
	if err != nil {
		return fmt.Errorf("Keyline stays sealed: %w", err)
	}
	master, err := seal.New(key)
	seal.Wipe(key)
	if err != nil {
		return err
	}
	s.barrier = &barrier{cfg: *c}
	if err := s.unsealWith(ctx, master); err != nil {
		return err
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

// InitSeal seals a data directory with target, keeping its master key (and
// so every key and record) when it has one: a new directory gets a fresh
// key and its admin API key; a dev one loses its key file; a shamir one
// needs the threshold of unseal key shares; an auto-unseal one needs the
// secrets of its current HSM or KMS in cfg.Unseal. The PIN or API key of
// the target are in target itself.
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
		return res, errors.New("this data directory is sealed with shamir already")
	}
	key, err := currentMasterKey(ctx, cfg, db, existing, shares)
	if err != nil {
		return res, err
	}
	defer seal.Wipe(key)
	if existing != nil {
		res.Migrated, res.From = true, existing.Mode
	} else if _, statErr := os.Stat(cfg.MasterKeyFile); statErr == nil {
		res.Migrated, res.From = true, SealDev
	}
	master, err := seal.New(key)
	if err != nil {
		return res, err
	}
	c := sealConfig{Mode: target.Mode, KeyCheck: master.Seal(keyCheckPlain, keyCheckAAD)}
	var auto *autoUnseal
	switch target.Mode {
	case SealShamir:
		split, err := seal.Split(key, target.Shares, target.Threshold)
		if err != nil {
			return res, err
		}
		for _, sh := range split {
			res.Shares = append(res.Shares, sh.String())
		}
		c.Shares, c.Threshold = target.Shares, target.Threshold
	case SealPKCS11, SealKMS:
		if auto, err = wrapForTarget(ctx, target, key); err != nil {
			return res, err
		}
	default:
		return res, fmt.Errorf("unknown seal %q: use shamir, pkcs11 or kms", target.Mode)
	}
	log, err := audit.New(ctx, db, cfg.Clock, cfg.Logger)
	if err != nil {
		return res, err
	}
	defer log.Close()
	iamSvc, err := iam.New(ctx, iam.Config{DB: db, Master: master, Clock: cfg.Clock, Logger: cfg.Logger, Audit: log})
	if err != nil {
		return res, err
	}
	if _, apikey, created, err := iamSvc.Bootstrap(ctx, cfg.AdminAPIKey); err != nil {
		return res, err
	} else if created {
		res.AdminAPIKey = apikey
	}
	if err := writeSealTarget(ctx, db, c, auto, store.Time(cfg.Clock.Now())); err != nil {
		return res, err
	}
	if res.From == SealDev {
		if err := os.Remove(cfg.MasterKeyFile); err != nil {
			return res, fmt.Errorf("the database is sealed with %s now, but %s could not be removed: remove it: %w", target.Mode, cfg.MasterKeyFile, err)
		}
	}
	return res, nil
}

// currentMasterKey is the master key of the directory as it is sealed now,
// or a fresh one for a new directory.
func currentMasterKey(ctx context.Context, cfg Config, db *store.DB, existing *sealConfig, shares []string) ([]byte, error) {
	if existing == nil {
		if _, err := os.Stat(cfg.MasterKeyFile); err != nil {
			return seal.RandomKey(), nil
		}
		existing = &sealConfig{Mode: SealDev}
	}
	switch existing.Mode {
	case SealDev:
		key, err := seal.ReadMasterKey(cfg.MasterKeyFile)
		if err != nil {
			return nil, err
		}
		if master, _ := seal.New(key); existing.KeyCheck != nil && !existing.checkKey(master) {
			seal.Wipe(key)
			return nil, fmt.Errorf("%s is not the master key of this database", cfg.MasterKeyFile)
		}
		return key, nil
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
		key, err := seal.Combine(parsed)
		if err != nil {
			return nil, err
		}
		if master, err := seal.New(key); err != nil || !existing.checkKey(master) {
			seal.Wipe(key)
			return nil, errors.New("the unseal key shares given do not rebuild this data directory's master key")
		}
		return key, nil
	case SealPKCS11, SealKMS:
		return unwrapMasterKey(ctx, db, existing, cfg.Unseal)
	}
	return nil, fmt.Errorf("this data directory is sealed with %q, which this Keyline does not know", existing.Mode)
}

// wrapForTarget wraps key with the target's HSM or KMS key (generating the
// HSM key when the token has none of that label), and unwraps it once to
// prove the way back before anything is written.
func wrapForTarget(ctx context.Context, target SealTarget, key []byte) (*autoUnseal, error) {
	a := &autoUnseal{}
	secrets := UnsealSecrets{PKCS11PIN: target.PKCS11.PIN, KMSAPIKey: target.KMS.APIKey}
	if target.Mode == SealPKCS11 {
		p := target.PKCS11
		a.PKCS11 = &p
	} else {
		k := target.KMS
		a.KMS = &k
	}
	w, err := a.wrapper(secrets, true)
	if err != nil {
		return nil, err
	}
	defer w.Close()
	if a.Wrapped, err = w.Wrap(ctx, key); err != nil {
		return nil, err
	}
	back, err := w.Unwrap(ctx, a.Wrapped)
	if err != nil {
		return nil, fmt.Errorf("%s seal: the master key was wrapped but does not unwrap: %w", target.Mode, err)
	}
	defer seal.Wipe(back)
	if subtle.ConstantTimeCompare(back, key) != 1 {
		return nil, fmt.Errorf("%s seal: the master key does not come back unwrapped as it was", target.Mode)
	}
	return a, nil
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
