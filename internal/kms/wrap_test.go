package kms

import (
	"bytes"
	"testing"

	"github.com/google/uuid"
)

func testCipher(t testing.TB) *versionCipher {
	v, err := newVersionCipher(uuid.NewString(), uuid.NewString(), "", bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestWrappedKeyIsBoundToVersionKeyAndAAD(t *testing.T) {
	v := testCipher(t)
	ct := v.seal([]byte("data encryption key"), []string{"a", "b"})
	w, err := parseWrapped(ct)
	if err != nil || w.version != v.id {
		t.Fatalf("parse: %v, version %v", err, w.version)
	}
	if pt, err := v.open(w, []string{"a", "b"}); err != nil || string(pt) != "data encryption key" {
		t.Fatalf("open = %q, %v", pt, err)
	}
	other := *v
	other.keyID = uuid.New() // same material, another key id
	tampered := append([]byte(nil), ct...)
	tampered[len(tampered)-1] ^= 1
	tw, _ := parseWrapped(tampered)
	cases := []struct {
		name string
		open func() error
	}{
		{"other aad", func() error { _, err := v.open(w, []string{"a", "c"}); return err }},
		{"aad split differently", func() error { _, err := v.open(w, []string{"ab"}); return err }},
		{"no aad", func() error { _, err := v.open(w, nil); return err }},
		{"other key id", func() error { _, err := other.open(w, []string{"a", "b"}); return err }},
		{"tampered", func() error { _, err := v.open(tw, []string{"a", "b"}); return err }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.open() == nil {
				t.Fatal("opened")
			}
		})
	}
	if bytes.Equal(v.seal([]byte("x"), nil)[17:29], v.seal([]byte("x"), nil)[17:29]) {
		t.Fatal("two seals used the same nonce")
	}
}

// FuzzParseWrapped feeds arbitrary bytes to the wrapped-key parser and to
// open: neither may panic, and nothing but a real wrapped key may open.
func FuzzParseWrapped(f *testing.F) {
	v := testCipher(f)
	f.Add(v.seal([]byte("seed dek"), nil))
	f.Add(v.seal([]byte{}, []string{"x"}))
	f.Add([]byte{})
	f.Add([]byte{wrapFormatV1})
	f.Add(bytes.Repeat([]byte{wrapFormatV1}, wrapHeaderSize+gcmTagSize))
	f.Add([]byte(`{"ciphertext":"abc","iv":"def","version":"4.0.0","handle":"x"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		w, err := parseWrapped(b)
		if err != nil {
			return
		}
		if len(w.nonce) != 12 || len(w.sealed) < gcmTagSize {
			t.Fatalf("parsed a short wrapped key: %d nonce, %d sealed", len(w.nonce), len(w.sealed))
		}
		if w.version == v.id {
			if pt, err := v.open(w, nil); err == nil && !bytes.Equal(pt, []byte("seed dek")) {
				t.Fatalf("forged wrapped key opened to %q", pt)
			}
		}
	})
}

// TestReusedEventDataStartsEmpty: recordCrypto's maps go back to the pool
// empty, so an event never carries the previous one's data (a wrap after
// a rewrapping unwrap would otherwise name a rewrapped version).
func TestReusedEventDataStartsEmpty(t *testing.T) {
	d := cryptoEventData.Get().(*eventData)
	d.request["instanceID"], d.request["keyRingId"] = "i", "r"
	d.response["keyId"], d.response["rewrappedKeyVersionId"] = "k", "v"
	d.release()
	if len(d.request) != 0 || len(d.response) != 0 {
		t.Fatalf("released event data: %v, %v", d.request, d.response)
	}
}
