package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// certificate is a PEM certificate chain and its private key, served to
// HTTPS and Kafka (SASL_SSL) clients and re-read when the files change, so
// that an operator rotates it without a restart.
type certificate struct {
	certFile, keyFile string
	log               *slog.Logger

	mu      sync.Mutex
	current *tls.Certificate
	seen    [2]fileStamp // of certFile and keyFile when last read
}

// fileStamp tells whether a file changed since it was read: writing it in
// place changes its mtime or size, renaming another onto it its inode, and
// a chmod 600 that makes a refused key acceptable its mode.
type fileStamp struct {
	mod   time.Time
	size  int64
	inode uint64
	mode  fs.FileMode
}

// loadCertificate reads the pair once; a missing, unreadable, malformed or
// mismatched pair, or a key file readable by group or others, is an error
// naming the file.
func loadCertificate(certFile, keyFile string, log *slog.Logger) (*certificate, error) {
	switch {
	case certFile == "" && keyFile == "":
		return nil, nil
	case certFile == "":
		return nil, errors.New("TLS: a private key is configured without a certificate (--tls-cert)")
	case keyFile == "":
		return nil, errors.New("TLS: a certificate is configured without its private key (--tls-key)")
	}
	c := &certificate{certFile: certFile, keyFile: keyFile, log: log}
	stamps, err := c.stamps()
	if err != nil {
		return nil, err
	}
	if c.current, err = readPair(certFile, keyFile); err != nil {
		return nil, err
	}
	c.seen = stamps
	return c, nil
}

// tlsConfig is the server side of TLS for every listener: TLS 1.2 or later,
// with the certificate of the moment.
func (c *certificate) tlsConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: c.get}
}

// get serves the certificate, first re-reading the pair if either file
// changed. Two stat calls per handshake cost little next to the handshake.
// A pair that does not load (say, the certificate is replaced but the key
// not yet) leaves the previous one in service, and is tried again once
// either file changes again.
func (c *certificate) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	stamps, err := c.stamps()
	if stamps == c.seen {
		return c.current, nil
	}
	c.seen = stamps // said once per change, not at every handshake
	if err != nil {
		c.log.Warn("TLS: the certificate files are unreadable; still serving the previous certificate", "err", err)
		return c.current, nil
	}
	next, err := readPair(c.certFile, c.keyFile)
	if err != nil {
		c.log.Warn("TLS: the changed certificate does not load; still serving the previous one", "err", err)
		return c.current, nil
	}
	c.current = next
	c.log.Info("TLS: certificate reloaded", "cert", c.certFile, "subject", next.Leaf.Subject.String(), "not_after", next.Leaf.NotAfter)
	return c.current, nil
}

func (c *certificate) stamps() ([2]fileStamp, error) {
	var out [2]fileStamp
	for i, path := range []string{c.certFile, c.keyFile} {
		st, err := os.Stat(path)
		if err != nil {
			return out, fmt.Errorf("TLS: %w", err)
		}
		out[i] = fileStamp{mod: st.ModTime(), size: st.Size(), mode: st.Mode()}
		if sys, ok := st.Sys().(*syscall.Stat_t); ok {
			out[i].inode = sys.Ino
		}
	}
	return out, nil
}

// readPair loads the certificate chain and its key. Errors name the file
// and never quote its content.
func readPair(certFile, keyFile string) (*tls.Certificate, error) {
	if err := privateFile(keyFile); err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("TLS certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("TLS private key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("TLS: certificate %s and private key %s do not make a pair: %v", certFile, keyFile, err)
	}
	if pair.Leaf == nil {
		if pair.Leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("TLS certificate %s: %v", certFile, err)
		}
	}
	return &pair, nil
}

// privateFile refuses a key file that group or others may read, as the
// master key is refused.
func privateFile(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("TLS private key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return &fs.PathError{Op: "TLS private key", Path: path, Err: errors.New("not a regular file")}
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("TLS private key %s is readable by group or others (mode %v): chmod 600 it", path, perm)
	}
	return nil
}
