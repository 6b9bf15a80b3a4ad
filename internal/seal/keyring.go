package seal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// A Keyring holds the master keys by version: the current one, which seals
// everything new, and during a master key rotation the one before it, which
// still opens what the rotation has not re-sealed yet. Whatever protects
// the keyring at rest (Shamir shares of an unseal key, later an HSM or a
// KMS) sits on top of it: it seals the keyring's bytes, nothing else.
//
// A value sealed through the keyring starts with a header naming the master
// key version that sealed it; values from before keyrings existed have no
// header and were sealed by LegacyVersion.
type Keyring struct {
	mu      sync.RWMutex
	current uint32
	keys    map[uint32]*ringKey
}

type ringKey struct {
	raw  []byte // nil for a key only given as an AEAD (a dev key file)
	aead *AEAD
}

// LegacyVersion is the version of the master key that sealed values
// without a header: the single master key of a data directory from before
// keyrings.
const LegacyVersion uint32 = 1

// ringMagic starts every header; HeaderSize is the whole header's length.
const (
	ringMagic  = "\xffKR"
	HeaderSize = len(ringMagic) + 4
)

// KeyringAAD binds a sealed keyring to its purpose.
var KeyringAAD = []byte("keyline/seal/keyring")

// NewKeyring is a keyring of one master key.
func NewKeyring(version uint32, key []byte) (*Keyring, error) {
	a, err := New(key)
	if err != nil {
		return nil, err
	}
	if version == 0 {
		return nil, errors.New("seal: master key versions start at 1")
	}
	return &Keyring{current: version, keys: map[uint32]*ringKey{version: {raw: append([]byte(nil), key...), aead: a}}}, nil
}

// LegacyKeyring wraps a master key whose bytes are kept elsewhere (the dev
// key file): it seals and opens, and cannot be stored.
func LegacyKeyring(master *AEAD) *Keyring {
	return &Keyring{current: LegacyVersion, keys: map[uint32]*ringKey{LegacyVersion: {aead: master}}}
}

// AEAD is the keyring as the services see the master key: Seal uses the
// current version, Open the version a value names.
func (r *Keyring) AEAD() *AEAD { return &AEAD{ring: r} }

// Current is the version that seals new values.
func (r *Keyring) Current() uint32 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.current
}

// Versions lists the versions held, oldest first.
func (r *Keyring) Versions() []uint32 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var vs []uint32
	for v := range r.keys {
		vs = append(vs, v)
	}
	slices.Sort(vs)
	return vs
}

func (r *Keyring) seal(plaintext, aad []byte) []byte {
	r.mu.RLock()
	v, k := r.current, r.keys[r.current]
	r.mu.RUnlock()
	body := k.aead.Seal(plaintext, aad)
	out := make([]byte, HeaderSize, HeaderSize+len(body))
	copy(out, ringMagic)
	binary.BigEndian.PutUint32(out[len(ringMagic):], v)
	return append(out, body...)
}

// Open opens a value sealed under any key of the ring and says which
// version sealed it: 0 for a value without a header (sealed by
// LegacyVersion before keyrings).
func (r *Keyring) Open(sealed, aad []byte) ([]byte, uint32, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if len(sealed) >= HeaderSize && string(sealed[:len(ringMagic)]) == ringMagic {
		v := binary.BigEndian.Uint32(sealed[len(ringMagic):HeaderSize])
		if k := r.keys[v]; k != nil {
			if pt, err := k.aead.Open(sealed[HeaderSize:], aad); err == nil {
				return pt, v, nil
			}
		}
	}
	// A random nonce may start like a header: a value from before keyrings
	// is tried whole whatever its first bytes.
	if k := r.keys[LegacyVersion]; k != nil {
		if pt, err := k.aead.Open(sealed, aad); err == nil {
			return pt, 0, nil
		}
	}
	return nil, 0, ErrOpen
}

// OpensAny says whether any key of r opens sealed, whatever version its
// header names: what a dropped key could still read.
func (r *Keyring) OpensAny(sealed, aad []byte) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, k := range r.keys {
		if _, err := k.aead.Open(sealed, aad); err == nil {
			return true
		}
		if len(sealed) >= HeaderSize {
			if _, err := k.aead.Open(sealed[HeaderSize:], aad); err == nil {
				return true
			}
		}
	}
	return false
}

// WithNewKey is a copy of r plus a fresh random key, which is current.
func (r *Keyring) WithNewKey() (*Keyring, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	next := &Keyring{keys: map[uint32]*ringKey{}}
	for v, k := range r.keys {
		if k.raw == nil {
			return nil, errors.New("seal: this master key is kept outside the keyring and cannot be rotated")
		}
		next.keys[v] = &ringKey{raw: append([]byte(nil), k.raw...), aead: k.aead}
		next.current = max(next.current, v)
	}
	next.current++
	key := RandomKey()
	defer Wipe(key)
	a, err := New(key)
	if err != nil {
		return nil, err
	}
	next.keys[next.current] = &ringKey{raw: append([]byte(nil), key...), aead: a}
	return next, nil
}

// Without is a copy of r without version v, which must not be current.
func (r *Keyring) Without(v uint32) (*Keyring, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if v == r.current {
		return nil, errors.New("seal: the current master key cannot be dropped")
	}
	next := &Keyring{current: r.current, keys: map[uint32]*ringKey{}}
	for w, k := range r.keys {
		if w != v {
			next.keys[w] = &ringKey{raw: append([]byte(nil), k.raw...), aead: k.aead}
		}
	}
	return next, nil
}

// Replace makes r hold what next holds (next is not used afterwards); the
// bytes of keys r loses are wiped. Every AEAD made by r.AEAD follows.
func (r *Keyring) Replace(next *Keyring) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for v, k := range r.keys {
		if next.keys[v] != k {
			Wipe(k.raw)
		}
	}
	r.current, r.keys = next.current, next.keys
}

// Wipe drops every key; r opens nothing afterwards.
func (r *Keyring) Wipe() {
	r.Replace(&Keyring{keys: map[uint32]*ringKey{}})
}

// SealWith seals the keyring's keys under the key that protects it.
func (r *Keyring) SealWith(protector *AEAD) ([]byte, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	b := binary.BigEndian.AppendUint32(nil, r.current)
	for v, k := range r.keys {
		if k.raw == nil {
			return nil, errors.New("seal: this master key is kept outside the keyring and cannot be stored in it")
		}
		b = binary.BigEndian.AppendUint32(b, v)
		b = append(b, k.raw...)
	}
	defer Wipe(b)
	return protector.Seal(b, KeyringAAD), nil
}

// OpenKeyring opens what SealWith stored.
func OpenKeyring(protector *AEAD, sealed []byte) (*Keyring, error) {
	b, err := protector.Open(sealed, KeyringAAD)
	if err != nil {
		return nil, err
	}
	defer Wipe(b)
	const entry = 4 + KeySize
	if len(b) < 4+entry || (len(b)-4)%entry != 0 {
		return nil, errors.New("seal: the stored keyring is malformed")
	}
	r := &Keyring{current: binary.BigEndian.Uint32(b), keys: map[uint32]*ringKey{}}
	for rest := b[4:]; len(rest) > 0; rest = rest[entry:] {
		v := binary.BigEndian.Uint32(rest)
		a, err := New(rest[4:entry])
		if err != nil {
			return nil, err
		}
		r.keys[v] = &ringKey{raw: append([]byte(nil), rest[4:entry]...), aead: a}
	}
	if r.keys[r.current] == nil {
		return nil, fmt.Errorf("seal: the stored keyring lacks its current version %d", r.current)
	}
	return r, nil
}

// A SealedColumn is a database column whose values are sealed under the
// master key; a master key rotation re-seals each row of it. The package
// that owns the table declares it beside its schema.
type SealedColumn struct {
	Table  string
	Key    string // a unique text column the walk is ordered by
	Column string
	// Where narrows the rows (SQL over the table's columns), "" for all.
	Where string
	// AADColumns are read and given to AAD to rebuild what the value is
	// bound to.
	AADColumns []string
	AAD        func(cols []string) []byte
	Base64     bool // the column holds the standard base64 of the value
}
