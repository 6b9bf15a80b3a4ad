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
	"sync/atomic"

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

// dekKey is one DEK as an AEAD, with the key its metadata names are
// hashed with.
type dekKey struct {
	id    string
	aead  cipher.AEAD
	names []byte // HMAC-SHA256 key for metadata names, derived from the DEK
}

func newDEKKey(dek *seglog.DEK) (*dekKey, error) {
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
	return &dekKey{id: dek.ID, aead: aead, names: names}, nil
}

// sealedLen is the length of plain bytes of length n once sealed.
func (k *dekKey) sealedLen(n int) int { return 1 + len(k.id) + 12 + n + 16 }

// seal appends plain, sealed under aad, to dst.
func (k *dekKey) seal(dst, aad, plain []byte) []byte {
	dst = append(dst, byte(len(k.id)))
	dst = append(dst, k.id...)
	var nonce [12]byte
	rand.Read(nonce[:])
	dst = append(dst, nonce[:]...)
	return k.aead.Seal(dst, nonce[:], plain, aad)
}

// open appends the plain bytes of sealed, which k must have sealed, to dst.
func (k *dekKey) open(dst, aad, sealed []byte) ([]byte, error) {
	if sealedKeyID(sealed) != k.id {
		return dst, errUnknownKey
	}
	rest := sealed[1+len(k.id):]
	out, err := k.aead.Open(dst, rest[:12], rest[12:], aad)
	if err != nil {
		return dst, errAuth
	}
	return out, nil
}

// sealedKeyID is the ID of the DEK that sealed a value ("" if malformed).
func sealedKeyID(sealed []byte) string {
	if len(sealed) < 1 || len(sealed) < 1+int(sealed[0])+12+16 {
		return ""
	}
	return string(sealed[1 : 1+sealed[0]])
}

// keySet is the store's DEKs at one time: the one that seals, and every
// one that may have sealed something (more than one while a re-encryption
// runs). It is never changed, only replaced.
type keySet struct {
	sealing *dekKey
	byID    map[string]*dekKey
}

// keyring holds the store's current keySet: seal uses its sealing key,
// open whichever key the sealed value names.
type keyring struct{ set atomic.Pointer[keySet] }

// newKeyring makes a keyring of keys, the first of which seals.
func newKeyring(keys ...*seglog.DEK) (*keyring, error) {
	set := &keySet{byID: map[string]*dekKey{}}
	for i, dek := range keys {
		k, err := newDEKKey(dek)
		if err != nil {
			return nil, err
		}
		if _, dup := set.byID[k.id]; dup {
			return nil, errors.New("objlog: two DEKs with one ID")
		}
		if i == 0 {
			set.sealing = k
		}
		set.byID[k.id] = k
	}
	if set.sealing == nil {
		return nil, errors.New("objlog: no DEK")
	}
	kr := &keyring{}
	kr.set.Store(set)
	return kr, nil
}

// current is the key that seals now.
func (r *keyring) current() *dekKey { return r.set.Load().sealing }

// others are the keys that do not seal now.
func (r *keyring) others() []*dekKey {
	set := r.set.Load()
	var out []*dekKey
	for _, k := range set.byID {
		if k != set.sealing {
			out = append(out, k)
		}
	}
	return out
}

// sealWith replaces the keySet with one where k seals; with only, k is its
// only key.
func (r *keyring) sealWith(k *dekKey, only bool) {
	old := r.set.Load()
	set := &keySet{sealing: k, byID: map[string]*dekKey{k.id: k}}
	if !only {
		for id, o := range old.byID {
			if id != k.id {
				set.byID[id] = o
			}
		}
	}
	r.set.Store(set)
}

// sealedLen is the length of plain bytes of length n once sealed.
func (r *keyring) sealedLen(n int) int { return r.current().sealedLen(n) }

// seal appends plain, sealed under aad with the sealing key, to dst.
func (r *keyring) seal(dst, aad, plain []byte) []byte { return r.current().seal(dst, aad, plain) }

// open appends the plain bytes of sealed to dst.
func (r *keyring) open(dst, aad, sealed []byte) ([]byte, error) {
	out, _, err := r.openKey(dst, aad, sealed)
	return out, err
}

// openKey is open, also returning the key that sealed the value.
func (r *keyring) openKey(dst, aad, sealed []byte) ([]byte, *dekKey, error) {
	id := sealedKeyID(sealed)
	if id == "" {
		return dst, nil, errAuth
	}
	k := r.byID(id)
	if k == nil {
		return dst, nil, errUnknownKey
	}
	out, err := k.open(dst, aad, sealed)
	return out, k, err
}

// byID is the key of id, or nil.
func (r *keyring) byID(id string) *dekKey { return r.set.Load().byID[id] }

// nameHash is a metadata name's lookup key under the sealing key.
func (r *keyring) nameHash(name string) []byte { return r.current().nameHash(name) }

// nameHash is the lookup key of a metadata name: names are never stored in
// plain form, and without the DEK a hash cannot be tested against guesses.
func (k *dekKey) nameHash(name string) []byte {
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
