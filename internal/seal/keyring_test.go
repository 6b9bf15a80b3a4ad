package seal

import (
	"bytes"
	"testing"
)

func TestKeyringOpensEveryVersionAndSealsWithCurrent(t *testing.T) {
	first := RandomKey()
	legacy, _ := New(first)
	headerless := legacy.Seal([]byte("before keyrings"), []byte("aad"))

	ring, err := NewKeyring(LegacyVersion, first)
	if err != nil {
		t.Fatal(err)
	}
	master := ring.AEAD()
	v1 := master.Seal([]byte("one"), []byte("aad"))
	if pt, v, err := ring.Open(headerless, []byte("aad")); err != nil || v != 0 || string(pt) != "before keyrings" {
		t.Fatalf("a value from before keyrings: %q %d %v", pt, v, err)
	}

	next, err := ring.WithNewKey()
	if err != nil {
		t.Fatal(err)
	}
	ring.Replace(next)
	v2 := master.Seal([]byte("two"), []byte("aad")) // the same AEAD follows the ring
	for _, c := range []struct {
		sealed []byte
		want   string
		v      uint32
	}{{headerless, "before keyrings", 0}, {v1, "one", 1}, {v2, "two", 2}} {
		pt, v, err := ring.Open(c.sealed, []byte("aad"))
		if err != nil || string(pt) != c.want || v != c.v {
			t.Fatalf("open = %q v%d %v, want %q v%d", pt, v, err, c.want, c.v)
		}
		if _, err := master.Open(c.sealed, []byte("other")); err != ErrOpen {
			t.Fatalf("another aad opened: %v", err)
		}
	}

	// Stored and reopened under the key that protects it.
	protector, _ := New(RandomKey())
	stored, err := ring.SealWith(protector)
	if err != nil {
		t.Fatal(err)
	}
	back, err := OpenKeyring(protector, stored)
	if err != nil || back.Current() != 2 || len(back.Versions()) != 2 {
		t.Fatalf("reopened keyring: %v %v", back, err)
	}
	other, _ := New(RandomKey())
	if _, err := OpenKeyring(other, stored); err == nil {
		t.Fatal("another key opened the keyring")
	}
	if bytes.Contains(stored, first) {
		t.Fatal("the stored keyring holds a master key in plain form")
	}

	// Dropping version 1: its values no longer open, and its bytes are wiped.
	old := ring.keys[1].raw
	dropped, err := ring.Without(1)
	if err != nil {
		t.Fatal(err)
	}
	ring.Replace(dropped)
	if !bytes.Equal(old, make([]byte, KeySize)) {
		t.Fatal("the dropped key's bytes were not wiped")
	}
	for _, s := range [][]byte{headerless, v1} {
		if _, _, err := ring.Open(s, []byte("aad")); err != ErrOpen {
			t.Fatalf("a value of the dropped key still opens: %v", err)
		}
	}
	if _, err := ring.Without(2); err == nil {
		t.Fatal("the current key was dropped")
	}
	if LegacyKeyring(legacy).Current() != LegacyVersion {
		t.Fatal("legacy keyring version")
	}
	if _, err := LegacyKeyring(legacy).WithNewKey(); err == nil {
		t.Fatal("a key kept outside the keyring was rotated")
	}
}

func TestOpenKeyringRefusesMalformed(t *testing.T) {
	p, _ := New(RandomKey())
	for _, b := range [][]byte{nil, {0, 0, 0, 1}, append([]byte{0, 0, 0, 9, 0, 0, 0, 1}, RandomKey()...)} {
		if _, err := OpenKeyring(p, p.Seal(b, KeyringAAD)); err == nil {
			t.Fatalf("malformed keyring %x accepted", b)
		}
	}
}
