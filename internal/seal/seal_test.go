package seal

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestSealOpenBindsKeyAndAAD(t *testing.T) {
	a, _ := New(RandomKey())
	b, _ := New(RandomKey())
	msg := []byte("key material")
	ct := a.Seal(msg, []byte("key-1"))
	if bytes.Contains(ct, msg) {
		t.Fatal("ciphertext contains the plaintext")
	}
	if got, err := a.Open(ct, []byte("key-1")); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("open: %q %v", got, err)
	}
	if _, err := a.Open(ct, []byte("key-2")); err != ErrOpen {
		t.Fatalf("other aad opened: %v", err)
	}
	if _, err := b.Open(ct, []byte("key-1")); err != ErrOpen {
		t.Fatalf("other key opened: %v", err)
	}
	ct[len(ct)-1] ^= 1
	if _, err := a.Open(ct, []byte("key-1")); err != ErrOpen {
		t.Fatalf("tampered ciphertext opened: %v", err)
	}
	if _, err := a.Open([]byte{1, 2}, nil); err != ErrOpen {
		t.Fatalf("short ciphertext: %v", err)
	}
	if bytes.Equal(a.Seal(msg, nil)[:12], a.Seal(msg, nil)[:12]) {
		t.Fatal("two seals used the same nonce")
	}
}

func TestMasterKeyIsCreatedPrivateAndReloaded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "master.key")
	a, err := LoadMasterKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("master key mode %v, %v", st.Mode().Perm(), err)
	}
	b, err := LoadMasterKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(a.Seal([]byte("x"), nil), nil); err != nil {
		t.Fatal("reloaded master key differs")
	}
	os.Chmod(path, 0o644)
	if _, err := LoadMasterKey(path); err == nil {
		t.Fatal("a world-readable master key was accepted")
	}
}
