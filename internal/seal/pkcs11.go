//go:build cgo

package seal

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
)

// pkcs11Wrapper wraps with AES-256-GCM (CKM_AES_GCM) inside the HSM: the
// key is generated there, sensitive and not extractable, and the nonce is
// ours, random per wrap.
type pkcs11Wrapper struct {
	ctx *crypto11.Context
	key *crypto11.SecretKey
}

// OpenPKCS11 logs in to the token and finds the wrapping key; with create
// it generates the key when the token has none of that label.
func OpenPKCS11(cfg PKCS11Config, create bool) (KeyWrapper, error) {
	if cfg.Module == "" || cfg.KeyLabel == "" || (cfg.TokenLabel == "") == (cfg.Slot == nil) {
		return nil, errors.New("pkcs11 seal: give the module, the key label, and either the token label or the slot")
	}
	if cfg.PIN == "" {
		return nil, errors.New("pkcs11 seal: no PIN: give --pkcs11-pin-file or set KEYLINE_PKCS11_PIN")
	}
	ctx, err := crypto11.Configure(&crypto11.Config{Path: cfg.Module, TokenLabel: cfg.TokenLabel, SlotNumber: cfg.Slot, Pin: cfg.PIN})
	if err != nil {
		return nil, fmt.Errorf("pkcs11 seal: %s: %s", cfg.where(), pkcs11Cause(err))
	}
	keys, err := ctx.FindKeys(nil, []byte(cfg.KeyLabel))
	var key *crypto11.SecretKey
	switch {
	case err != nil:
	case len(keys) == 0 && create:
		id := RandomKey()[:16]
		key, err = ctx.GenerateSecretKeyWithLabel(id, []byte(cfg.KeyLabel), 256, crypto11.CipherAES)
	case len(keys) == 0:
		err = errors.New("the token has no key of that label")
	case len(keys) > 1:
		err = errors.New("the token has several keys of that label: give each its own")
	default:
		key = keys[0]
	}
	if err != nil {
		ctx.Close()
		return nil, fmt.Errorf("pkcs11 seal: key %q on %s: %s", cfg.KeyLabel, cfg.where(), pkcs11Cause(err))
	}
	return &pkcs11Wrapper{ctx: ctx, key: key}, nil
}

func (c PKCS11Config) where() string {
	if c.Slot != nil {
		return fmt.Sprintf("slot %d of %s", *c.Slot, c.Module)
	}
	return fmt.Sprintf("token %q of %s", c.TokenLabel, c.Module)
}

// pkcs11Cause names the usual mistakes in words; the PKCS#11 code stays.
func pkcs11Cause(err error) string {
	var pe pkcs11.Error
	switch {
	case errors.As(err, &pe) && (pe == pkcs11.CKR_PIN_INCORRECT || pe == pkcs11.CKR_PIN_INVALID || pe == pkcs11.CKR_PIN_LEN_RANGE):
		return "wrong PIN (" + err.Error() + ")"
	case errors.As(err, &pe) && pe == pkcs11.CKR_PIN_LOCKED:
		return "the PIN is locked (" + err.Error() + ")"
	case strings.Contains(err.Error(), "could not find PKCS#11 token"):
		return "no such token (check the token label or slot)"
	}
	return err.Error()
}

func (w *pkcs11Wrapper) Wrap(_ context.Context, key []byte) ([]byte, error) {
	gcm, err := w.key.NewGCM()
	if err != nil {
		return nil, fmt.Errorf("pkcs11 seal: %w", err)
	}
	nonce := RandomKey()[:gcm.NonceSize()]
	var out []byte
	// crypto11 reports HSM failures of Seal by panicking; turn them into errors.
	err = func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("pkcs11 seal: wrap: %v", r)
			}
		}()
		out = gcm.Seal(append([]byte(nil), nonce...), nonce, key, masterKeyAAD)
		return nil
	}()
	return out, err
}

func (w *pkcs11Wrapper) Unwrap(_ context.Context, wrapped []byte) ([]byte, error) {
	gcm, err := w.key.NewGCM()
	if err != nil {
		return nil, fmt.Errorf("pkcs11 seal: %w", err)
	}
	n := gcm.NonceSize()
	if len(wrapped) < n+gcm.Overhead() {
		return nil, errors.New("pkcs11 seal: the wrapped master key is damaged")
	}
	key, err := gcm.Open(nil, wrapped[:n], wrapped[n:], masterKeyAAD)
	if err != nil {
		return nil, fmt.Errorf("pkcs11 seal: the HSM key does not unwrap this database's master key (another key of the same label?): %w", err)
	}
	return key, nil
}

func (w *pkcs11Wrapper) Close() error { return w.ctx.Close() }
