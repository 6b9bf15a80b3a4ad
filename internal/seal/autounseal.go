package seal

import "context"

// A KeyWrapper keeps the master key wrapped by a key that never leaves
// somewhere else: an HSM (pkcs11) or another Key Protect-compatible
// service (kms). The wrapped blob may be stored beside the data, as it is
// useless without that key; the server unwraps it at every start.
type KeyWrapper interface {
	Wrap(ctx context.Context, key []byte) ([]byte, error)
	Unwrap(ctx context.Context, wrapped []byte) ([]byte, error)
	Close() error
}

// masterKeyAAD binds a wrapped blob to its use, so that no other
// ciphertext of the same HSM or KMS key passes for the master key.
var masterKeyAAD = []byte("keyline/seal/master-key v1")

// PKCS11Config says which HSM key wraps the master key. Everything but
// PIN is recorded in the database; the PIN never is.
type PKCS11Config struct {
	Module     string `json:"module"`
	TokenLabel string `json:"token_label,omitempty"`
	Slot       *int   `json:"slot,omitempty"`
	KeyLabel   string `json:"key_label"`
	PIN        string `json:"-"`
}
