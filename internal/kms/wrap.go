package kms

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"

	"github.com/google/uuid"
)

// The wrapped-key format (WrappedDEK), opaque to clients:
//
//	byte 0       format version (1)
//	bytes 1..16  the key version id (UUID) that sealed it
//	bytes 17..28 a random 96-bit GCM nonce
//	bytes 29..   AES-GCM ciphertext and 16-byte tag
//
// The GCM additional data binds the ciphertext to the key id, the version id
// and the caller's AAD strings, so a ciphertext cannot be unwrapped under
// another key or with other AAD. Nonces are random: a version seals far fewer
// than the 2^32 messages NIST SP 800-38D allows that way, and rotation starts
// a fresh key.
const (
	wrapFormatV1   = 1
	wrapHeaderSize = 1 + 16 + 12
	gcmTagSize     = 16
	maxAADItems    = 32
	maxAADItemLen  = 255
)

var errBadCiphertext = errors.New("kms: malformed wrapped key")

// wrappedKey is a parsed wrapped-key blob.
type wrappedKey struct {
	version uuid.UUID
	nonce   []byte
	sealed  []byte
}

// parseWrapped splits a wrapped key into its parts without decrypting it.
func parseWrapped(b []byte) (wrappedKey, error) {
	if len(b) < wrapHeaderSize+gcmTagSize || b[0] != wrapFormatV1 {
		return wrappedKey{}, errBadCiphertext
	}
	var w wrappedKey
	copy(w.version[:], b[1:17])
	w.nonce = b[17:29]
	w.sealed = b[29:]
	return w, nil
}

// wrapAAD is the GCM additional data for a key, version and caller AAD.
func wrapAAD(keyID, versionID uuid.UUID, aad []string) []byte {
	n := 16 + 32 + binary.MaxVarintLen64
	for _, a := range aad {
		n += len(a) + binary.MaxVarintLen64
	}
	out := make([]byte, 0, n)
	out = append(out, "keyline-wrap-v1\x00"...)
	out = append(out, keyID[:]...)
	out = append(out, versionID[:]...)
	out = binary.AppendUvarint(out, uint64(len(aad)))
	for _, a := range aad {
		out = binary.AppendUvarint(out, uint64(len(a)))
		out = append(out, a...)
	}
	return out
}

// versionCipher is one key version's material, ready to seal and open.
type versionCipher struct {
	keyID   uuid.UUID
	id      uuid.UUID
	created string
	aead    cipher.AEAD
	// idText is id as text and auditID the same in an interface value,
	// made once: every wrap's answer and audit event carry them.
	idText  string
	auditID any
}

func newVersionCipher(keyID, versionID, created string, material []byte) (*versionCipher, error) {
	kid, err := uuid.Parse(keyID)
	if err != nil {
		return nil, err
	}
	vid, err := uuid.Parse(versionID)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(material)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	text := vid.String()
	return &versionCipher{keyID: kid, id: vid, created: created, aead: gcm, idText: text, auditID: text}, nil
}

// seal wraps plaintext under this version.
func (v *versionCipher) seal(plaintext []byte, aad []string) []byte {
	out := make([]byte, wrapHeaderSize, wrapHeaderSize+len(plaintext)+gcmTagSize)
	out[0] = wrapFormatV1
	copy(out[1:17], v.id[:])
	if _, err := rand.Read(out[17:29]); err != nil {
		panic("kms: no randomness: " + err.Error())
	}
	return v.aead.Seal(out, out[17:29], plaintext, wrapAAD(v.keyID, v.id, aad))
}

// open unwraps a parsed wrapped key sealed by this version.
func (v *versionCipher) open(w wrappedKey, aad []string) ([]byte, error) {
	return v.aead.Open(nil, w.nonce, w.sealed, wrapAAD(v.keyID, v.id, aad))
}
