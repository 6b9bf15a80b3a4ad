package server

import (
	"crypto/tls"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/tlstest"
)

var quiet = slog.New(slog.DiscardHandler)

func TestCertificateIsRefusedAtStartNamingTheFile(t *testing.T) {
	dir := t.TempDir()
	pairs := tlstest.IssueRefusable(t, dir)
	good, other, loose := pairs.Good, pairs.Other, pairs.Loose
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyPEM, _ := os.ReadFile(good.KeyFile)
	for _, tc := range []struct {
		name, cert, key string
		want            []string
	}{
		{"certificate without key", good.CertFile, "", []string{"--tls-key"}},
		{"key without certificate", "", good.KeyFile, []string{"--tls-cert"}},
		{"missing certificate", filepath.Join(dir, "none.pem"), good.KeyFile, []string{"none.pem", "no such file"}},
		{"missing key", good.CertFile, filepath.Join(dir, "none-key.pem"), []string{"none-key.pem", "no such file"}},
		{"key readable by group", loose.CertFile, loose.KeyFile, []string{loose.KeyFile, "readable by group or others", "chmod 600"}},
		{"mismatched pair", good.CertFile, other.KeyFile, []string{good.CertFile, other.KeyFile, "do not make a pair"}},
		{"certificate not PEM", garbage, good.KeyFile, []string{garbage, "do not make a pair"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadCertificate(tc.cert, tc.key, quiet)
			if err == nil {
				t.Fatalf("loaded %+v", c)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), strings.Split(string(keyPEM), "\n")[1]) {
				t.Errorf("error %q quotes the private key", err)
			}
		})
	}
}

func TestNoCertificateMeansNoTLS(t *testing.T) {
	c, err := loadCertificate("", "", quiet)
	if c != nil || err != nil {
		t.Fatalf("got %v, %v; want neither", c, err)
	}
}

// serial is the serial number of the certificate a handshake would get.
func serial(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	c, err := cfg.GetCertificate(&tls.ClientHelloInfo{ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf.SerialNumber.String()
}

// replace copies from's files over to's, as an operator installing a new
// certificate would.
func replace(t *testing.T, fromFile, toFile string) {
	t.Helper()
	data, err := os.ReadFile(fromFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(toFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCertificateReloadsWhenItsFilesChange(t *testing.T) {
	dir, spare := t.TempDir(), t.TempDir()
	first := tlstest.Issue(t, dir, "server", "127.0.0.1")
	c, err := loadCertificate(first.CertFile, first.KeyFile, quiet)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.tlsConfig()
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion %x, want TLS 1.2", cfg.MinVersion)
	}
	if got := serial(t, cfg); got != first.Cert.SerialNumber.String() {
		t.Fatalf("serving %s, want the first certificate", got)
	}

	// Rotated by renaming new files onto the old names.
	second := tlstest.Issue(t, dir, "server", "127.0.0.1")
	if got := serial(t, cfg); got != second.Cert.SerialNumber.String() {
		t.Fatalf("serving %s after rotation, want the second certificate", got)
	}

	// Rotated in place, the certificate first: until the key follows, the
	// pair does not match and the second certificate stays in service.
	third := tlstest.Issue(t, spare, "server", "127.0.0.1")
	replace(t, third.CertFile, first.CertFile)
	if got := serial(t, cfg); got != second.Cert.SerialNumber.String() {
		t.Fatalf("serving %s with a half-written pair, want the second certificate still", got)
	}
	replace(t, third.KeyFile, first.KeyFile)
	if got := serial(t, cfg); got != third.Cert.SerialNumber.String() {
		t.Fatalf("serving %s once the key followed, want the third certificate", got)
	}

	// A new key readable by others is refused like at start.
	fourth := tlstest.Issue(t, dir, "server", "127.0.0.1")
	fourth.ChmodKey(t, 0o644)
	if got := serial(t, cfg); got != third.Cert.SerialNumber.String() {
		t.Fatalf("serving %s with a world-readable key, want the third certificate still", got)
	}
	fourth.ChmodKey(t, 0o600)
	if got := serial(t, cfg); got != fourth.Cert.SerialNumber.String() {
		t.Fatalf("serving %s once the key is chmod 600, want the fourth certificate", got)
	}

	// Files gone: the certificate in memory keeps serving.
	os.Remove(first.CertFile)
	if got := serial(t, cfg); got != fourth.Cert.SerialNumber.String() {
		t.Fatalf("serving %s with the files gone, want the fourth certificate still", got)
	}
}

// BenchmarkCertificateUnchanged is what each handshake pays to learn that
// the certificate files did not change.
func BenchmarkCertificateUnchanged(b *testing.B) {
	pair := tlstest.Issue(b, b.TempDir(), "server", "127.0.0.1")
	c, err := loadCertificate(pair.CertFile, pair.KeyFile, quiet)
	if err != nil {
		b.Fatal(err)
	}
	hello := &tls.ClientHelloInfo{ServerName: "127.0.0.1"}
	for b.Loop() {
		if _, err := c.get(hello); err != nil {
			b.Fatal(err)
		}
	}
}
