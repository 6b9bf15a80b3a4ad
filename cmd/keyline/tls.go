package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/keyline/keyline/internal/client"
)

// transport is how the CLI reaches the server: the system's roots (which
// honour SSL_CERT_FILE and SSL_CERT_DIR) plus, when named, the CA file the
// user passed to `keyline login --cacert`.
func transport(caFile string) http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if caFile == "" {
		return t
	}
	pool, err := caPool(caFile)
	if err != nil {
		// Every call then fails saying why, rather than silently
		// falling back to the system roots.
		return failing{err}
	}
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}
	return t
}

func caPool(caFile string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA certificate (--cacert): %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA certificate %s (--cacert) holds no PEM certificate", caFile)
	}
	return pool, nil
}

// failing is a transport that cannot be built.
type failing struct{ err error }

func (f failing) RoundTrip(*http.Request) (*http.Response, error) { return nil, f.err }

// explainTLS turns a certificate the CLI does not trust, or plain HTTP
// sent to an HTTPS server, into advice.
func explainTLS(err error) error {
	var plain *client.Error
	if errors.As(err, &plain) && plain.Status == http.StatusBadRequest && strings.Contains(plain.Message, "HTTPS server") {
		return fmt.Errorf("%w\nThe server speaks HTTPS: use an https:// endpoint (keyline login -a https://HOST:PORT ...)", err)
	}
	var verify *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	var host x509.HostnameError
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &verify) && !errors.As(err, &unknown) && !errors.As(err, &host) && !errors.As(err, &invalid) {
		return err
	}
	return fmt.Errorf("%w\nThe server's TLS certificate is not trusted. If your own CA signed it, name that CA once: "+
		"keyline login -a https://HOST:PORT --apikey KEY --cacert ca.pem (or set SSL_CERT_FILE)", err)
}
