package server

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// The keyring form of the seal: the shares (or, later, an HSM or a KMS)
// protect an unseal key; the unseal key seals the keyring of master keys in
// seal_config.keyring; the master keys seal the data. A data directory from
// before the keyring form has no keyring: its shares are the master key
// itself, version seal.LegacyVersion, until `operator rekey` moves it.

// keyringMigration adds the keyring and the rotation's progress.
const keyringMigration = `
ALTER TABLE seal_config ADD COLUMN keyring BLOB;
CREATE TABLE seal_rotation (
	id           INTEGER PRIMARY KEY,
	state        TEXT NOT NULL,
	from_version INTEGER NOT NULL,
	to_version   INTEGER NOT NULL,
	step         INTEGER NOT NULL,
	cursor_key   TEXT NOT NULL,
	done         INTEGER NOT NULL,
	total        INTEGER NOT NULL,
	reason       TEXT NOT NULL,
	started_at   TEXT NOT NULL,
	finished_at  TEXT NOT NULL
);
`

// openKeyring checks the secret the shares rebuilt and opens the master
// keys with it. The unseal key is nil before the keyring form.
func (c *sealConfig) openKeyring(secret []byte) (*seal.Keyring, *seal.AEAD, error) {
	unsealKey, err := seal.New(secret)
	if err != nil || !c.checkKey(unsealKey) {
		return nil, nil, seal.ErrOpen
	}
	if c.Keyring == nil {
		ring, err := seal.NewKeyring(seal.LegacyVersion, secret)
		return ring, nil, err
	}
	ring, err := seal.OpenKeyring(unsealKey, c.Keyring)
	if err != nil {
		return nil, nil, err
	}
	return ring, unsealKey, nil
}

// newUnsealKey makes a fresh unseal key and its shares.
func newUnsealKey(shares, threshold int) (*seal.AEAD, []seal.Share, error) {
	key := seal.RandomKey()
	defer seal.Wipe(key)
	split, err := seal.Split(key, shares, threshold)
	if err != nil {
		return nil, nil, err
	}
	unsealKey, err := seal.New(key)
	return unsealKey, split, err
}

// recordOperatorEvent audits what an operator did on the data directory
// with no server running (init), in the admin account's Activity Tracker.
func recordOperatorEvent(ctx context.Context, log *audit.Log, logger *slog.Logger, account, action string, data map[string]any) {
	ev := audit.NewEvent(ctx, action, audit.Target{ID: "crn:v1:bluemix:public:keyline:global:a/" + account + "::", TypeURI: "keyline/seal"}, audit.Success, 200)
	ev.Account = account
	ev.Initiator = audit.Initiator{ID: "keyline-operator", Name: "keyline operator (local)", TypeURI: "service/security/account/user"}
	addRequestData(ev, data)
	if err := log.Record(ctx, ev); err != nil {
		logger.Error("audit of "+action, "err", err)
	}
}

// addRequestData adds to what the event says of the request.
func addRequestData(ev *audit.Event, data map[string]any) {
	if ev.RequestData == nil {
		ev.RequestData = map[string]any{}
	}
	for k, v := range data {
		ev.RequestData[k] = v
	}
}

// RekeyResult is printed once and never stored.
type RekeyResult struct {
	Shares    []string
	Threshold int
}

var errRekeyDev = errs.E("sys.rekey", errs.Invalid, "DEV_MODE", "A dev-mode Keyline has no unseal key shares; run `keyline operator init` first")

// Rekey checks the threshold of current shares, makes a new unseal key
// and new shares (shares of threshold), and seals the keyring under it:
// the old shares stop working. A data directory from before the keyring
// form moves to it here (its master key stays; rotate it afterwards).
// Under a pkcs11 or kms seal it takes no shares and returns none: the new
// unseal key is wrapped by the same HSM or KMS key (see rewrapUnsealKey).
func (s *Server) Rekey(ctx context.Context, texts []string, shares, threshold int, ev *audit.Event) (RekeyResult, error) {
	const op = "sys.rekey"
	var res RekeyResult
	b := s.barrier
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cfg.Mode == SealDev {
		return res, errRekeyDev
	}
	if b.sealed {
		return res, errs.E(op, errs.Unavailable, "SEALED", "Keyline is sealed: unseal it first")
	}
	if b.cfg.Mode == SealPKCS11 || b.cfg.Mode == SealKMS {
		return res, s.rewrapUnsealKey(ctx, ev)
	}
	if threshold < 2 || shares < threshold || shares > 255 {
		return res, errs.E(op, errs.Invalid, "BAD_SHARES", "want 2 <= secret_threshold <= secret_shares <= 255")
	}
	if len(texts) < b.cfg.Threshold {
		return res, errs.Ef(op, errs.Invalid, "TOO_FEW_SHARES", "Rekeying needs %d of the current unseal key shares, got %d", b.cfg.Threshold, len(texts))
	}
	var given []seal.Share
	for _, t := range texts {
		sh, err := seal.ParseShare(t)
		if err != nil {
			return res, errs.E(op, errs.Invalid, "MALFORMED_SHARE", err.Error())
		}
		given = append(given, sh)
	}
	secret, err := seal.Combine(given)
	if err != nil {
		return res, errs.E(op, errs.Invalid, "WRONG_SHARES", err.Error())
	}
	defer seal.Wipe(secret)
	if old, err := seal.New(secret); err != nil || !b.cfg.checkKey(old) {
		return res, errs.E(op, errs.Invalid, "WRONG_SHARES", "The unseal key shares are not this Keyline's current shares")
	}
	unsealKey, split, err := newUnsealKey(shares, threshold)
	if err != nil {
		return res, errs.Internalf(op, err)
	}
	r := &b.rotation
	r.keyringMu.Lock()
	defer r.keyringMu.Unlock()
	sealedRing, err := b.ring.SealWith(unsealKey)
	if err != nil {
		return res, errs.Internalf(op, err)
	}
	c := b.cfg
	c.Shares, c.Threshold, c.KeyCheck, c.Keyring = shares, threshold, unsealKey.Seal(keyCheckPlain, keyCheckAAD), sealedRing
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := writeSealConfigTx(tx, c, s.cfg.Clock.Now()); err != nil {
			return err
		}
		keyringChanged(tx, keyringRekeyed)
		addRequestData(ev, map[string]any{"secret_shares": shares, "secret_threshold": threshold})
		return s.Audit.Append(tx, ev)
	})
	if err != nil {
		return res, errs.Internalf(op, err)
	}
	b.cfg, b.unsealKey = c, unsealKey
	for _, sh := range split {
		res.Shares = append(res.Shares, sh.String())
	}
	res.Threshold = threshold
	s.cfg.Logger.Warn("the unseal key was changed: the previous unseal key shares no longer open this Keyline", "t", threshold, "n", shares)
	return res, nil
}

// rewrapUnsealKey is rekey under a pkcs11 or kms seal: a fresh unseal key
// seals the keyring and the same HSM or KMS key wraps it, with the secrets
// the server started with; the previous wrapped key opens nothing more. A
// data directory whose HSM or KMS wrapped the master key itself (from
// before the keyring form) moves to the keyring form here. Called with
// b.mu held.
func (s *Server) rewrapUnsealKey(ctx context.Context, ev *audit.Event) error {
	const op = "sys.rekey"
	b := s.barrier
	r := &b.rotation
	r.keyringMu.Lock()
	defer r.keyringMu.Unlock()
	a, err := readAutoUnseal(ctx, s.db)
	if err != nil {
		return errs.Internalf(op, err)
	}
	raw := seal.RandomKey()
	defer seal.Wipe(raw)
	unsealKey, err := seal.New(raw)
	if err != nil {
		return errs.Internalf(op, err)
	}
	if err := a.wrapChecked(ctx, s.cfg.Unseal, false, raw); err != nil {
		return errs.Internalf(op, fmt.Errorf("the %s seal could not wrap a new unseal key: %w", b.cfg.Mode, err))
	}
	sealedRing, err := b.ring.SealWith(unsealKey)
	if err != nil {
		return errs.Internalf(op, err)
	}
	c := b.cfg
	c.KeyCheck, c.Keyring = unsealKey.Seal(keyCheckPlain, keyCheckAAD), sealedRing
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := writeAutoUnsealTx(tx, a); err != nil {
			return err
		}
		if err := writeSealConfigTx(tx, c, s.cfg.Clock.Now()); err != nil {
			return err
		}
		addRequestData(ev, map[string]any{"seal": c.Mode})
		return s.Audit.Append(tx, ev)
	})
	if err != nil {
		return errs.Internalf(op, err)
	}
	b.cfg, b.unsealKey = c, unsealKey
	s.cfg.Logger.Warn("the unseal key was changed and wrapped again by the " + c.Mode + " seal")
	return nil
}
