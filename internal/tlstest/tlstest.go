// Package tlstest issues self-signed certificates for tests that run
// Keyline with TLS: the certificate is its own CA, so a client trusts it by
// naming the certificate file as the CA.
package tlstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Pair is a certificate written as PEM files.
type Pair struct {
	CertFile string // the certificate, also the CA file clients name
	KeyFile  string // its private key, mode 0600
	Cert     *x509.Certificate
}

// Pool is a certificate pool holding only this certificate.
func (p Pair) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.Cert)
	return pool
}

// Issue writes a new self-signed certificate for hosts (IP addresses or
// DNS names) as <dir>/<name>.pem and its key as <dir>/<name>-key.pem.
func Issue(t testing.TB, dir, name string, hosts ...string) Pair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	p := Pair{CertFile: filepath.Join(dir, name+".pem"), KeyFile: filepath.Join(dir, name+"-key.pem"), Cert: cert}
	write(t, p.CertFile, "CERTIFICATE", der)
	write(t, p.KeyFile, "PRIVATE KEY", keyDER)
	return p
}

// write replaces path (through a temporary file and a rename, as an
// operator rotating a certificate would) with one PEM block, mode 0600.
func write(t testing.TB, path, kind string, der []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// ChmodKey sets the key file's mode, say to make it readable by others.
func (p Pair) ChmodKey(t testing.TB, mode os.FileMode) {
	t.Helper()
	if err := os.Chmod(p.KeyFile, mode); err != nil {
		t.Fatal(err)
	}
}

// Refusable is a good pair beside what a server must refuse: Other's key
// does not match Good's certificate, and Loose's key (mode 0644) is
// readable by group and others.
type Refusable struct{ Good, Other, Loose Pair }

// IssueRefusable writes the three pairs for 127.0.0.1 into dir.
func IssueRefusable(t testing.TB, dir string) Refusable {
	t.Helper()
	r := Refusable{Good: Issue(t, dir, "good", "127.0.0.1"), Other: Issue(t, dir, "other", "127.0.0.1"), Loose: Issue(t, dir, "loose", "127.0.0.1")}
	r.Loose.ChmodKey(t, 0o644)
	return r
}
