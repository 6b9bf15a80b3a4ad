// Package seal does Keyline's authenticated encryption: AES-256-GCM with a
// fresh random 96-bit nonce per message, and the master key that protects all
// KMS key material at rest.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// KeySize is the size of every symmetric key Keyline uses (AES-256).
const KeySize = 32

const nonceSize = 12

// AEAD seals and opens messages under one key. Nonces are 96-bit random
// values: NIST SP 800-38D allows 2^32 messages per key that way, far beyond
// what one key seals in Keyline (key material, wrapped keys). The master
// key is an AEAD over a Keyring (see keyring.go).
type AEAD struct {
	gcm  cipher.AEAD
	ring *Keyring
}

// New makes an AEAD for a 32-byte key.
func New(key []byte) (*AEAD, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &AEAD{gcm: gcm}, nil
}

// Seal encrypts plaintext bound to aad; the result is nonce || ciphertext || tag.
func (a *AEAD) Seal(plaintext, aad []byte) []byte {
	if a.ring != nil {
		return a.ring.seal(plaintext, aad)
	}
	out := make([]byte, nonceSize, nonceSize+len(plaintext)+a.gcm.Overhead())
	if _, err := rand.Read(out[:nonceSize]); err != nil {
		panic("seal: no randomness: " + err.Error()) // crypto/rand never fails on Linux
	}
	return a.gcm.Seal(out, out[:nonceSize], plaintext, aad)
}

// ErrOpen is returned for any ciphertext that does not authenticate: wrong
// key, wrong additional data, or tampering. It says nothing more on purpose.
var ErrOpen = errors.New("seal: message authentication failed")

// Open decrypts what Seal produced with the same aad.
func (a *AEAD) Open(sealed, aad []byte) ([]byte, error) {
	if a.ring != nil {
		pt, _, err := a.ring.Open(sealed, aad)
		return pt, err
	}
	if len(sealed) < nonceSize+a.gcm.Overhead() {
		return nil, ErrOpen
	}
	pt, err := a.gcm.Open(nil, sealed[:nonceSize], sealed[nonceSize:], aad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// RandomKey returns a fresh 256-bit key.
func RandomKey() []byte {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		panic("seal: no randomness: " + err.Error())
	}
	return k
}

// Wipe zeroes b.
func Wipe(b []byte) {
	for i := range b {
		b[i] = 0
	}
}

// LoadMasterKey reads the master key from path (base64 text of 32 bytes), or
// creates it with mode 0600 when the file does not exist yet. A file that is
// readable by others is refused.
func LoadMasterKey(path string) (*AEAD, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := RandomKey()
		defer Wipe(key)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return nil, fmt.Errorf("create master key %s: %w", path, err)
		}
		_, werr := f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
		serr := f.Sync()
		cerr := f.Close()
		if err := errors.Join(werr, serr, cerr); err != nil {
			return nil, fmt.Errorf("write master key %s: %w", path, err)
		}
		return New(key)
	}
	if err != nil {
		return nil, fmt.Errorf("read master key %s: %w", path, err)
	}
	key, err := decodeMasterKey(path, data)
	if err != nil {
		return nil, err
	}
	defer Wipe(key)
	return New(key)
}

// ReadMasterKey returns the master key in the file at path, which must
// exist: a dev data directory being moved to another seal.
func ReadMasterKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read master key %s: %w", path, err)
	}
	defer Wipe(data)
	return decodeMasterKey(path, data)
}

func decodeMasterKey(path string, data []byte) ([]byte, error) {
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("master key %s is readable by group or others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(data)))
	if err != nil || len(key) != KeySize {
		return nil, fmt.Errorf("master key %s must hold the base64 of %d random bytes", path, KeySize)
	}
	return key, nil
}
