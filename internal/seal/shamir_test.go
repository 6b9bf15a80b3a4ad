package seal

import (
	"bytes"
	"errors"
	"testing"
)

// FIPS-197 section 4.2 gives products in AES's field, the field of the
// shares.
func TestGFMulKnownVectors(t *testing.T) {
	for _, c := range []struct{ a, b, want byte }{
		{0x57, 0x83, 0xc1}, {0x57, 0x13, 0xfe}, {0x57, 0x02, 0xae}, {0x57, 0x04, 0x47},
		{0x57, 0x08, 0x8e}, {0x57, 0x10, 0x07}, {0x00, 0xff, 0x00}, {0x01, 0xab, 0xab},
	} {
		if got := gfMul(c.a, c.b); got != c.want {
			t.Errorf("%#x * %#x = %#x, want %#x", c.a, c.b, got, c.want)
		}
	}
	// FIPS-197 5.1.1: the S-box's first step is the inverse; {53}^-1 = {CA}.
	if got := gfInv(0x53); got != 0xca {
		t.Errorf("inverse of 0x53 = %#x, want 0xca", got)
	}
	for a := 1; a < 256; a++ {
		if gfMul(byte(a), gfInv(byte(a))) != 1 {
			t.Fatalf("%#x * inverse != 1", a)
		}
	}
}

// A secret split by hand: f(x) = 0x42 + 0x13 x over GF(2^8) gives
// f(1) = 0x51, f(2) = 0x42^0x26 = 0x64; any two rebuild 0x42.
func TestCombineKnownVector(t *testing.T) {
	got, err := Combine([]Share{{X: 1, Y: []byte{0x51}}, {X: 2, Y: []byte{0x64}}})
	if err != nil || !bytes.Equal(got, []byte{0x42}) {
		t.Fatalf("combine = %x, %v; want 42", got, err)
	}
}

func TestAnyThresholdOfSharesRebuildsTheSecret(t *testing.T) {
	secret := RandomKey()
	shares, err := Split(secret, 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	n := len(shares)
	for a := 0; a < n; a++ {
		for b := a + 1; b < n; b++ {
			for c := b + 1; c < n; c++ {
				got, err := Combine([]Share{shares[c], shares[a], shares[b]})
				if err != nil || !bytes.Equal(got, secret) {
					t.Fatalf("shares %d,%d,%d: %x, %v", a, b, c, got, err)
				}
			}
			// Two of a threshold of three give something else.
			if got, _ := Combine([]Share{shares[a], shares[b]}); bytes.Equal(got, secret) {
				t.Fatalf("two shares rebuilt the secret")
			}
		}
	}
	all, _ := Combine(shares)
	if !bytes.Equal(all, secret) {
		t.Fatal("all shares do not rebuild the secret")
	}
}

// With threshold-1 shares fixed, every value of a secret byte stays
// possible: for each candidate there is a last share that yields it, so the
// shares held say nothing about the secret.
func TestFewerThanThresholdSharesRevealNothing(t *testing.T) {
	shares, err := Split([]byte{0x9c}, 3, 3)
	if err != nil {
		t.Fatal(err)
	}
	reached := map[byte]bool{}
	for y := 0; y < 256; y++ {
		got, err := Combine([]Share{shares[0], shares[1], {X: shares[2].X, Y: []byte{byte(y)}}})
		if err != nil {
			t.Fatal(err)
		}
		reached[got[0]] = true
	}
	if len(reached) != 256 {
		t.Fatalf("two of three shares exclude %d secret values", 256-len(reached))
	}
}

func TestShareTextRoundTripsAndRefusesDamage(t *testing.T) {
	shares, _ := Split(RandomKey(), 3, 2)
	text := shares[1].String()
	got, err := ParseShare(" " + text + "\n")
	if err != nil || got.X != shares[1].X || !bytes.Equal(got.Y, shares[1].Y) {
		t.Fatalf("parse = %+v, %v", got, err)
	}
	damaged := []byte(text)
	damaged[5] ^= 1
	if damaged[5] == '+' || damaged[5] == '/' {
		damaged[5] = 'A'
	}
	for _, bad := range []string{"", "not base64!", text[:len(text)-4], string(damaged)} {
		if _, err := ParseShare(bad); !errors.Is(err, ErrMalformedShare) {
			t.Errorf("ParseShare(%q) = %v, want ErrMalformedShare", bad, err)
		}
	}
	if _, err := Combine([]Share{shares[0], shares[0]}); err == nil {
		t.Error("the same share twice was accepted")
	}
	if _, err := Split(RandomKey(), 2, 3); err == nil {
		t.Error("a threshold above the shares was accepted")
	}
}
