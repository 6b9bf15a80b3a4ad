package archive

import (
	"context"
	"crypto/subtle"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
)

// KeyWrapper is the customer's backup root key as the backup service uses
// it: in the server, the KMS wraps and unwraps as the block-storage
// identity under the dependent authorization. Unwrap errors pass through
// to the caller unchanged, so a deleted key (cryptoshredding) or a revoked
// authorization keeps its own kind and reason.
type KeyWrapper interface {
	WrapDEK(ctx context.Context, dek []byte) (WrappedDEK, error)
	UnwrapDEK(ctx context.Context, w WrappedDEK) ([]byte, error)
}

// LocalRootKey wraps backup DEKs under a root key held in this process. It
// serves installs without a KMS and the benchmarks; deployments with
// Bring Your Own Key go through the KMS instead.
type LocalRootKey struct {
	crn, version string
	aead         *seal.AEAD
}

// NewLocalRootKey makes a root key named crn (version names the key
// material) from 32 bytes of key.
func NewLocalRootKey(crn, version string, key []byte) (*LocalRootKey, error) {
	a, err := seal.New(key)
	if err != nil {
		return nil, errs.E("backup/archive.NewLocalRootKey", errs.Invalid, "ROOT_KEY_INVALID", "A root key is 32 bytes")
	}
	return &LocalRootKey{crn: crn, version: version, aead: a}, nil
}

func (k *LocalRootKey) aad() []byte {
	return []byte("keyline/backup-dek\x00" + k.crn + "\x00" + k.version)
}

// WrapDEK implements KeyWrapper.
func (k *LocalRootKey) WrapDEK(ctx context.Context, dek []byte) (WrappedDEK, error) {
	return WrappedDEK{KeyCRN: k.crn, KeyVersion: k.version, Ciphertext: k.aead.Seal(dek, k.aad())}, nil
}

// UnwrapDEK implements KeyWrapper.
func (k *LocalRootKey) UnwrapDEK(ctx context.Context, w WrappedDEK) ([]byte, error) {
	const op = "backup/archive.UnwrapDEK"
	if subtle.ConstantTimeCompare([]byte(w.KeyCRN), []byte(k.crn)) != 1 || w.KeyVersion != k.version {
		return nil, errs.E(op, errs.Unprocessable, "BACKUP_KEY_MISMATCH", "The backup was sealed under another root key")
	}
	dek, err := k.aead.Open(w.Ciphertext, k.aad())
	if err != nil || len(dek) != seal.KeySize {
		return nil, errs.E(op, errs.Unprocessable, "BACKUP_MODIFIED", "The backup's wrapped key does not unwrap: the backup was modified")
	}
	return dek, nil
}
