package seal

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// Shamir's secret sharing over GF(2^8) with AES's polynomial
// x^8+x^4+x^3+x+1: each byte of the secret is the constant term of its own
// random polynomial of degree threshold-1, and share i holds the
// polynomials' values at x = i (1..255). Any threshold shares rebuild the
// secret by Lagrange interpolation at 0; fewer leave every secret equally
// likely.

// gfMul multiplies in GF(2^8) without branches on its operands, so the
// time it takes says nothing about secret bytes.
func gfMul(a, b byte) byte {
	var p byte
	for i := 0; i < 8; i++ {
		p ^= -(b & 1) & a
		hi := -(a >> 7)
		a = a<<1 ^ hi&0x1b
		b >>= 1
	}
	return p
}

// gfInv is a^254 = a^-1 (0 for 0), also without branches on a.
func gfInv(a byte) byte {
	r, p := byte(1), a
	for e := 254; e > 0; e >>= 1 {
		if e&1 == 1 {
			r = gfMul(r, p)
		}
		p = gfMul(p, p)
	}
	return r
}

// A Share is one point of every byte's polynomial.
type Share struct {
	X byte
	Y []byte
}

// shareVersion prefixes the text form, so a share of another tool or a
// future format is told apart.
const shareVersion = 1

// shareCheckSize is the length of the SHA-256 prefix a share's text ends
// with: a mistyped or truncated share is refused on entry, before it can
// spoil a reconstruction.
const shareCheckSize = 4

// ErrMalformedShare says a share's text is not one this Keyline printed.
var ErrMalformedShare = errors.New("the unseal key share is malformed: give it exactly as `keyline operator init` printed it")

// String is the share as printed to operators: base64 of version, x, y and
// a checksum.
func (s Share) String() string {
	b := append([]byte{shareVersion, s.X}, s.Y...)
	sum := sha256.Sum256(b)
	return base64.StdEncoding.EncodeToString(append(b, sum[:shareCheckSize]...))
}

// ParseShare reads what String printed, checking its checksum.
func ParseShare(text string) (Share, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(text))
	if err != nil || len(b) < 2+1+shareCheckSize || b[0] != shareVersion || b[1] == 0 {
		return Share{}, ErrMalformedShare
	}
	body, check := b[:len(b)-shareCheckSize], b[len(b)-shareCheckSize:]
	sum := sha256.Sum256(body)
	if subtle.ConstantTimeCompare(sum[:shareCheckSize], check) != 1 {
		return Share{}, ErrMalformedShare
	}
	return Share{X: body[1], Y: append([]byte(nil), body[2:]...)}, nil
}

// Split cuts secret into n shares of which any threshold rebuild it.
func Split(secret []byte, n, threshold int) ([]Share, error) {
	if threshold < 2 || n < threshold || n > 255 {
		return nil, fmt.Errorf("want 2 <= threshold <= shares <= 255, got %d of %d", threshold, n)
	}
	if len(secret) == 0 {
		return nil, errors.New("nothing to split")
	}
	shares := make([]Share, n)
	for i := range shares {
		shares[i] = Share{X: byte(i + 1), Y: make([]byte, len(secret))}
	}
	coef := make([]byte, threshold) // coef[0] is the secret byte
	defer Wipe(coef)
	for j, sb := range secret {
		coef[0] = sb
		if _, err := rand.Read(coef[1:]); err != nil {
			return nil, err
		}
		for i := range shares {
			x := shares[i].X
			// Horner's rule from the highest coefficient down.
			var y byte
			for k := threshold - 1; k >= 0; k-- {
				y = gfMul(y, x) ^ coef[k]
			}
			shares[i].Y[j] = y
		}
	}
	return shares, nil
}

// Combine rebuilds the secret from shares (at least the threshold; with
// fewer the result is some other value, which callers detect by checking
// it against what it must open).
func Combine(shares []Share) ([]byte, error) {
	if len(shares) < 2 {
		return nil, errors.New("at least two shares are needed")
	}
	size := len(shares[0].Y)
	seen := map[byte]bool{}
	for _, s := range shares {
		if s.X == 0 || seen[s.X] {
			return nil, errors.New("the same unseal key share was given twice")
		}
		if len(s.Y) != size {
			return nil, errors.New("the unseal key shares are of different lengths: they come from different keys")
		}
		seen[s.X] = true
	}
	// Lagrange basis at 0: l_i = prod_{j!=i} x_j / (x_j - x_i); minus is xor.
	basis := make([]byte, len(shares))
	for i, si := range shares {
		l := byte(1)
		for j, sj := range shares {
			if i != j {
				l = gfMul(l, gfMul(sj.X, gfInv(sj.X^si.X)))
			}
		}
		basis[i] = l
	}
	out := make([]byte, size)
	for i, s := range shares {
		for k := range out {
			out[k] ^= gfMul(basis[i], s.Y[k])
		}
	}
	return out, nil
}
