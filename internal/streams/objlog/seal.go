package objlog

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// A sealed value is
//
//	idLen(1) | dekID | nonce(12) | AES-256-GCM(plain) with its tag
//
// so that each value names the DEK that sealed it, as seglog's blocks do.
// The additional data always starts with a label for the kind of value and
// the store's ID, so a value moved to another place or store fails to open.

var (
	errUnknownKey = errors.New("objlog: sealed by a data key that was not supplied")
	errAuth       = errors.New("objlog: a sealed value does not authenticate")
)

// keyring holds the store's one DEK as an AEAD and the key its metadata
// names are hashed with.
type keyring struct {
	id    string
	aead  cipher.AEAD
	names []byte // HMAC-SHA256 key for metadata names, derived from the DEK
}

func newKeyring(dek *seglog.DEK) (*keyring, error) {
	if len(dek.ID) == 0 || len(dek.ID) > 255 || len(dek.Key) != 32 {
		return nil, errors.New("objlog: a DEK needs an ID of 1 to 255 bytes and 32 bytes of key")
	}
	block, err := aes.NewCipher(dek.Key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	names, err := hkdf.Key(sha256.New, dek.Key, nil, "keyline/objlog metadata names", 32)
	if err != nil {
		return nil, err
	}
	return &keyring{id: dek.ID, aead: aead, names: names}, nil
}

// sealedLen is the length of plain bytes of length n once sealed.
func (k *keyring) sealedLen(n int) int { return 1 + len(k.id) + 12 + n + 16 }

// seal appends plain, sealed under aad, to dst.
func (k *keyring) seal(dst, aad, plain []byte) []byte {
	dst = append(dst, byte(len(k.id)))
	dst = append(dst, k.id...)
	var nonce [12]byte
	rand.Read(nonce[:])
	dst = append(dst, nonce[:]...)
	return k.aead.Seal(dst, nonce[:], plain, aad)
}

// open appends the plain bytes of sealed to dst.
func (k *keyring) open(dst, aad, sealed []byte) ([]byte, error) {
	if len(sealed) < 1 || len(sealed) < 1+int(sealed[0])+12+16 {
		return dst, errAuth
	}
	id := sealed[1 : 1+sealed[0]]
	if string(id) != k.id {
		return dst, errUnknownKey
	}
	rest := sealed[1+len(id):]
	out, err := k.aead.Open(dst, rest[:12], rest[12:], aad)
	if err != nil {
		return dst, errAuth
	}
	return out, nil
}

// nameHash is the lookup key of a metadata name: names are never stored in
// plain form, and without the DEK a hash cannot be tested against guesses.
func (k *keyring) nameHash(name string) []byte {
	m := hmac.New(sha256.New, k.names)
	m.Write([]byte(name))
	return m.Sum(nil)
}

// aad builds additional data: label, store ID, then the parts, each
// length-prefixed so that no two lists encode alike.
func aad(label, storeID string, parts ...[]byte) []byte {
	b := make([]byte, 0, 64)
	b = binary.AppendUvarint(b, uint64(len(label)))
	b = append(b, label...)
	b = binary.AppendUvarint(b, uint64(len(storeID)))
	b = append(b, storeID...)
	for _, p := range parts {
		b = binary.AppendUvarint(b, uint64(len(p)))
		b = append(b, p...)
	}
	return b
}

// metaLen is the size of the BatchMeta that starts each chunk's plain
// bytes (seglog's encoding, Size included).
const metaLen = seglog.BatchMetaLen
