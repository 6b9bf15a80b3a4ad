package server

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// Seal modes, recorded in the database (never the key itself).
const (
	SealShamir = "shamir" // the master key exists only as operators' shares
	SealDev    = "dev"    // the master key is a file in the data directory
)

var sealMigrations = []store.Migration{{ID: "seal/0001", SQL: `
CREATE TABLE seal_config (
	id         INTEGER PRIMARY KEY,
	mode       TEXT NOT NULL,
	shares     INTEGER NOT NULL,
	threshold  INTEGER NOT NULL,
	key_check  BLOB NOT NULL,
	created_at TEXT NOT NULL
);
`}, {ID: "seal/0002", SQL: keyringMigration}}

// keyCheck is sealed under the unseal key (before the keyring form: the
// master key) and stored: rebuilt shares are that key exactly when it
// opens. The key is 256 random bits, so holding this sealed constant
// allows no offline guessing.
var (
	keyCheckPlain = []byte("keyline master key check v1")
	keyCheckAAD   = []byte("keyline/seal/key-check")
)

// sealConfig is the seal_config row.
type sealConfig struct {
	Mode              string
	Shares, Threshold int
	KeyCheck          []byte
	Keyring           []byte // the master keys sealed by the unseal key; nil: the shares or file are the master key
}

func readSealConfig(ctx context.Context, db *store.DB) (*sealConfig, error) {
	var c sealConfig
	err := db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT mode, shares, threshold, key_check, keyring FROM seal_config WHERE id = 1`).Scan(&c.Mode, &c.Shares, &c.Threshold, &c.KeyCheck, &c.Keyring)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the seal configuration: %w", err)
	}
	return &c, nil
}

func writeSealConfig(ctx context.Context, db *store.DB, c sealConfig, now time.Time) error {
	return db.Tx(ctx, func(tx *store.Tx) error { return writeSealConfigTx(tx, c, now) })
}

func writeSealConfigTx(tx *store.Tx, c sealConfig, now time.Time) error {
	_, err := tx.Exec(`INSERT INTO seal_config (id, mode, shares, threshold, key_check, keyring, created_at) VALUES (1, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET mode = excluded.mode, shares = excluded.shares, threshold = excluded.threshold,
		key_check = excluded.key_check, keyring = excluded.keyring, created_at = excluded.created_at`,
		c.Mode, c.Shares, c.Threshold, c.KeyCheck, c.Keyring, store.Time(now))
	return err
}

// checkKey says whether master opens the stored key check.
func (c *sealConfig) checkKey(master *seal.AEAD) bool {
	pt, err := master.Open(c.KeyCheck, keyCheckAAD)
	return err == nil && string(pt) == string(keyCheckPlain)
}

// barrier holds the seal state: while sealed no service runs and no key
// material is in memory; unsealing builds the services with the master key.
type barrier struct {
	mu      sync.Mutex
	cfg     sealConfig
	sealed  bool
	pending []seal.Share // shares given toward the threshold

	// While unsealed: the master keys, and the unseal key that seals them
	// at rest (nil before the keyring form: see keyring.go).
	ring      *seal.Keyring
	unsealKey *seal.AEAD
	rotation  masterRotation
}

// SealStatus is GET /v1/sys/seal-status, in Vault's shape.
type SealStatus struct {
	Type        string `json:"type"`
	Initialized bool   `json:"initialized"`
	Sealed      bool   `json:"sealed"`
	T           int    `json:"t"`
	N           int    `json:"n"`
	Progress    int    `json:"progress"`
}

func (b *barrier) status() SealStatus {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.statusLocked()
}

func (b *barrier) statusLocked() SealStatus {
	return SealStatus{Type: b.cfg.Mode, Initialized: b.cfg.Mode != SealDev, Sealed: b.sealed,
		T: b.cfg.Threshold, N: b.cfg.Shares, Progress: len(b.pending)}
}

// isSealed is read on every request.
func (b *barrier) isSealed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sealed
}

// openSeal reads the seal mode and either unseals at once (dev) or leaves
// the server sealed until enough shares arrive.
func (s *Server) openSeal(ctx context.Context) error {
	if err := s.db.Migrate(ctx, sealMigrations); err != nil {
		return err
	}
	c, err := readSealConfig(ctx, s.db)
	if err != nil {
		return err
	}
	if c == nil || c.Mode == SealDev {
		return s.openDev(ctx, c)
	}
	if s.cfg.Dev {
		return fmt.Errorf("this data directory is sealed with %s: --dev cannot open it; start without --dev and unseal it", c.Mode)
	}
	if c.Mode == SealPKCS11 || c.Mode == SealKMS {
		return s.openAutoUnseal(ctx, c)
	}
	if c.Mode != SealShamir {
		return fmt.Errorf("this data directory is sealed with %q, which this Keyline does not know", c.Mode)
	}
	if _, err := os.Stat(s.cfg.MasterKeyFile); err == nil {
		return fmt.Errorf("%s is beside a %s-sealed database: a master key must not be kept in the data directory; remove the file", s.cfg.MasterKeyFile, c.Mode)
	}
	s.barrier = &barrier{cfg: *c, sealed: true}
	s.cfg.Logger.Warn("Keyline is sealed: give the threshold of unseal key shares with `keyline operator unseal`", "t", c.Threshold, "n", c.Shares)
	s.openSealedListeners(ctx)
	return nil
}

// openDev keeps today's master key file, with a warning at every start.
func (s *Server) openDev(ctx context.Context, c *sealConfig) error {
	master, err := seal.LoadMasterKey(s.cfg.MasterKeyFile)
	if err != nil {
		return err
	}
	if c == nil {
		c = &sealConfig{Mode: SealDev, KeyCheck: master.Seal(keyCheckPlain, keyCheckAAD)}
		if err := writeSealConfig(ctx, s.db, *c, s.cfg.Clock.Now()); err != nil {
			return err
		}
	} else if !c.checkKey(master) {
		return fmt.Errorf("%s is not the master key of this database", s.cfg.MasterKeyFile)
	}
	s.cfg.Logger.Warn("DEV MODE: the master key is kept in plain form in " + s.cfg.MasterKeyFile +
		": data is NOT protected at rest; for production run `keyline operator init` (see docs/seal.md)")
	s.barrier = &barrier{cfg: *c}
	return s.unsealWith(ctx, seal.LegacyKeyring(master), nil)
}

// unsealWith builds the services on the master keyring and opens the APIs.
func (s *Server) unsealWith(ctx context.Context, ring *seal.Keyring, unsealKey *seal.AEAD) error {
	s.master = ring.AEAD()
	s.barrier.ring, s.barrier.unsealKey = ring, unsealKey
	s.barrier.rotation.wake = make(chan struct{}, 1)
	s.mux = http.NewServeMux()
	if err := s.wire(ctx); err != nil {
		s.stop()
		s.master, s.svc = nil, nil
		s.barrier.ring, s.barrier.unsealKey = nil, nil
		ring.Wipe()
		return err
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	s.live.Store(s.mux)
	return nil
}

// ErrBadShare and friends are what an unseal call can be refused with.
var (
	errNotSealed   = errs.E("sys.unseal", errs.Invalid, "NOT_SEALED", "Keyline is not sealed")
	errWrongShares = errs.E("sys.unseal", errs.Invalid, "WRONG_SHARES",
		"The unseal key shares do not rebuild this Keyline's master key: the last share was not kept; give another, or reset and start over")
)

// Unseal adds one share; at the threshold it rebuilds the master key,
// checks it, and starts every service.
func (s *Server) Unseal(ctx context.Context, text string, reset bool) (SealStatus, error) {
	const op = "sys.unseal"
	b := s.barrier
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.sealed {
		return b.statusLocked(), errNotSealed
	}
	if b.cfg.Mode != SealShamir {
		return b.statusLocked(), errs.E(op, errs.Invalid, "AUTO_UNSEAL",
			"This Keyline unseals itself through its "+b.cfg.Mode+" seal and takes no shares: restart it to unseal")
	}
	if reset {
		b.pending = nil
		if text == "" {
			return b.statusLocked(), nil
		}
	}
	sh, err := seal.ParseShare(text)
	if err != nil {
		return b.statusLocked(), errs.E(op, errs.Invalid, "MALFORMED_SHARE", err.Error())
	}
	for _, p := range b.pending {
		if p.X == sh.X {
			return b.statusLocked(), errs.E(op, errs.Invalid, "DUPLICATE_SHARE", "This unseal key share was given already")
		}
	}
	if len(b.pending) > 0 && len(b.pending[0].Y) != len(sh.Y) {
		return b.statusLocked(), errWrongShares
	}
	if len(b.pending)+1 < b.cfg.Threshold {
		b.pending = append(b.pending, sh)
		return b.statusLocked(), nil
	}
	key, err := seal.Combine(append(append([]seal.Share(nil), b.pending...), sh))
	if err != nil {
		return b.statusLocked(), errs.E(op, errs.Invalid, "WRONG_SHARES", err.Error())
	}
	ring, unsealKey, err := b.cfg.openKeyring(key)
	seal.Wipe(key)
	if err != nil {
		return b.statusLocked(), errWrongShares
	}
	s.closeSealedListeners()
	// The services outlive this call: they run on the server's context.
	if err := s.unsealWith(context.WithoutCancel(ctx), ring, unsealKey); err != nil {
		s.openSealedListeners(ctx)
		return b.statusLocked(), errs.E(op, errs.Internal, "UNSEAL_FAILED", "The master key is right but the services did not start; see the server log").Because(err)
	}
	for _, p := range b.pending {
		seal.Wipe(p.Y)
	}
	b.pending, b.sealed = nil, false
	s.cfg.Logger.Info("Keyline is unsealed")
	return b.statusLocked(), nil
}

// Seal stops every service at once, closing their connections, and drops
// the master key; the server then answers as after a start in shamir mode.
// In dev mode the key would be back at the next start, so it is refused.
func (s *Server) Seal(ctx context.Context, ev *audit.Event) error {
	const op = "sys.seal"
	b := s.barrier
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cfg.Mode == SealDev {
		return errs.E(op, errs.Invalid, "DEV_MODE", "A dev-mode Keyline keeps its master key in a file and cannot be sealed; run `keyline operator init` first")
	}
	if b.sealed {
		return nil
	}
	b.sealed = true
	s.live.Store(nil)
	s.stop()
	s.svc, s.master, s.mux = nil, nil, nil
	b.ring.Wipe()
	b.ring, b.unsealKey = nil, nil
	// The audit log needs no key: the event is written after the brake.
	if err := s.Audit.Record(ctx, ev); err != nil {
		s.cfg.Logger.Error("audit of seal", "err", err)
	}
	s.cfg.Logger.Warn("Keyline is sealed by an operator: give the unseal key shares to open it again")
	s.openSealedListeners(context.WithoutCancel(ctx))
	return nil
}

// InitResult is printed once and never stored.
type InitResult struct {
	Shares      []string
	AdminAPIKey string // empty when the account existed (a dev directory moved)
	Migrated    bool   // the master key was kept: every key and record is
	From        string // the seal migrated from (dev: its key file is removed)
}

// Init seals a new or dev data directory with Shamir shares; InitSeal
// does every other seal and migration.
func Init(ctx context.Context, cfg Config, shares, threshold int) (InitResult, error) {
	return InitSeal(ctx, cfg, SealTarget{Mode: SealShamir, Shares: shares, Threshold: threshold}, nil)
}

// SealStatus is the seal state now.
func (s *Server) SealStatus() SealStatus { return s.barrier.status() }
