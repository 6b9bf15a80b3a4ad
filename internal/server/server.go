// Package server assembles every Keyline service into one process behind
// one HTTP listener, on embedded storage.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/net/netutil"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/backup"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/connhold"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// Config is what `keyline serve` is started with.
type Config struct {
	DataDir       string // default ./keyline-data
	Listen        string // default 127.0.0.1:8080
	MasterKeyFile string // default <DataDir>/master.key
	AdminAPIKey   string // the admin API key's value on first start; random when empty
	// DatabaseURL, when set (postgres://...), keeps the metadata in that
	// PostgreSQL database instead of SQLite in DataDir. Several Keyline
	// processes (nodes) may share it: see docs/cluster.md. Never logged.
	DatabaseURL string
	// NodeID names this node in cluster_nodes (default: a random id kept in
	// DataDir/node-id).
	NodeID string
	// Kafka listeners of deployments bind KafkaHost (default 127.0.0.1) on a
	// port in [KafkaPortMin, KafkaPortMax]; 0 lets the system choose.
	KafkaHost                  string
	KafkaPortMin, KafkaPortMax int
	Clock                      clock.Clock
	Logger                     *slog.Logger
	// Backups says where deployment backups are kept: a directory under
	// DataDir by default, or an S3-compatible bucket.
	Backups backup.VolumeConfig
	// ObjectStore, when set, keeps deployments' Kafka data in an
	// S3-compatible bucket (s3://bucket?endpoint=http://host:port&region=r)
	// instead of DataDir; it needs DatabaseURL. ObjectStoreAccessKey and
	// ObjectStoreSecretKey are its credentials (never logged), and
	// ObjectFlushWindow how long a produce waits for others to share its
	// object (default 5 ms).
	ObjectStore                                string
	ObjectStoreAccessKey, ObjectStoreSecretKey string
	ObjectFlushWindow                          time.Duration
	// TLSCertFile and TLSKeyFile, both or neither, are a PEM certificate
	// chain and its private key (mode 0600). With them the HTTP listener
	// serves HTTPS only and every deployment's Kafka listener SASL_SSL;
	// changed files are read again at the next handshake.
	TLSCertFile, TLSKeyFile string
	// PublicURL is the APIs' base URL as clients reach it (a proxy, a DNS
	// name), used in service credentials and printed at start. Default: the
	// bound address, or this host's name when Listen binds every interface.
	PublicURL string
	// KafkaAdvertisedHost is the host deployments' credentials and metadata
	// tell Kafka clients to connect to. Default: KafkaHost, or this host's
	// name when KafkaHost binds every interface (as Kafka's own
	// advertised.listeners does).
	KafkaAdvertisedHost string
	// KafkaReauthorize is how often live Kafka logins are checked against
	// IAM again (default 5 s).
	KafkaReauthorize time.Duration
	// KafkaMaxUnauthenticated and KafkaMaxUnauthenticatedPerIP cap each
	// deployment's Kafka connections that have not logged in (defaults 256
	// and 32 per source address); KafkaLoginTimeout is how long they may
	// take to log in (default 10 s).
	KafkaMaxUnauthenticated, KafkaMaxUnauthenticatedPerIP int
	KafkaLoginTimeout                                     time.Duration
	// The HTTP listener's limits, against clients that hold connections
	// without finishing requests: a request body must arrive within
	// RequestBodyTimeout (default 30 s), each response write finish within
	// WriteTimeout (default 30 s; a stream may wait between writes as long
	// as it likes), an idle keep-alive connection closes after IdleTimeout
	// (default 120 s), and at most MaxConnections are open at once, the
	// console's own calls to the APIs included (default 1024, or a quarter
	// of RLIMIT_NOFILE when that is lower, leaving the rest to Kafka and the
	// store); more wait to be accepted. At most MaxConnectionsPerIP of them
	// come from one source address (default a quarter of MaxConnections);
	// more are closed at once.
	RequestBodyTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxConnections, MaxConnectionsPerIP           int
	// Dev allows the dev seal (the master key in MasterKeyFile); a data
	// directory never given to `keyline operator init` is in it too.
	Dev bool
	// Unseal holds the PIN or API key of a pkcs11 or kms seal.
	Unseal UnsealSecrets
	// Kafka memory budgets, per process and per deployment (0: the
	// defaults); see streams.Config.
	KafkaFetchMemory, KafkaDeploymentFetchMemory     int64
	KafkaRequestMemory, KafkaDeploymentRequestMemory int64
	// MemoryLimit, when set, is the memory the process should stay within
	// (`keyline serve` makes it the Go runtime's soft limit, GOMEMLIMIT):
	// the Kafka budgets left at 0 are derived from it, a quarter of it for
	// fetches and an eighth for large requests, each deployment's at most
	// the process's.
	MemoryLimit int64
	// MasterRotationBatch is how many rows a master key rotation re-seals
	// per transaction (0: 100); MasterRotationHook, for tests, runs after
	// each batch with the count done.
	MasterRotationBatch int
	MasterRotationHook  func(ctx context.Context, done int64)
}

// Server is a running Keyline.
type Server struct {
	cfg    Config
	db     *store.DB
	master *seal.AEAD
	Audit  *audit.Log
	mux    *http.ServeMux
	tls    *tls.Config // nil: plain HTTP and SASL_PLAINTEXT
	http   *http.Server
	ln     net.Listener
	svc    *services

	node    *node                         // this node of the cluster (cluster.go)
	barrier *barrier                      // the seal state
	live    atomic.Pointer[http.ServeMux] // the APIs; nil while sealed
	sealedKafka

	// AdminAPIKey is set when this start created the admin API key.
	AdminAPIKey string
}

// New opens the data directory and builds every service, or, when the
// master key is sealed, only the seal status and unseal APIs.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg = withDefaults(cfg)
	publicURL, err := ParsePublicURL(cfg.PublicURL)
	if err != nil {
		return nil, err
	}
	cfg.PublicURL = publicURL
	if cfg.KafkaAdvertisedHost == "" {
		cfg.KafkaAdvertisedHost = reachableHost(cfg.KafkaHost)
	}
	// A bad certificate fails the start before anything is written.
	cert, err := loadCertificate(cfg.TLSCertFile, cfg.TLSKeyFile, cfg.Logger)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if cfg.ObjectStore != "" && cfg.DatabaseURL == "" {
		return nil, errs.E("server.New", errs.Invalid, "OBJECT_STORE_NEEDS_DATABASE", "--object-store keeps the log's index in the shared database: give --database-url postgres://...")
	}
	db, err := store.Open(ctx, cfg.DataDir, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, db: db}
	if err := s.newNode(); err != nil {
		db.Close()
		return nil, err
	}
	if cert != nil {
		s.tls = cert.tlsConfig()
	}
	// Bind first: service credentials advertise the address.
	if err := s.Listen(); err != nil {
		db.Close()
		return nil, err
	}
	if s.Audit, err = audit.New(ctx, db, cfg.Clock, cfg.Logger); err != nil {
		s.ln.Close()
		db.Close()
		return nil, err
	}
	if err := s.openSeal(ctx); err != nil {
		s.Audit.Close()
		s.ln.Close()
		db.Close()
		return nil, err
	}
	if err := s.joinCluster(ctx); err != nil {
		s.Close()
		s.ln.Close()
		return nil, err
	}
	return s, nil
}

// withDefaults fills in what cfg leaves out.
func withDefaults(cfg Config) Config {
	if cfg.DataDir == "" {
		cfg.DataDir = "keyline-data"
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8080"
	}
	if cfg.MasterKeyFile == "" {
		cfg.MasterKeyFile = filepath.Join(cfg.DataDir, "master.key")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.KafkaHost == "" {
		cfg.KafkaHost = "127.0.0.1"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.RequestBodyTimeout, defaultBodyTimeout}, {&cfg.WriteTimeout, defaultWriteTimeout}, {&cfg.IdleTimeout, defaultIdleTimeout}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	cfg = withMemoryLimit(cfg)
	cfg.MaxConnections, cfg.MaxConnectionsPerIP = connectionLimits(cfg.MaxConnections, cfg.MaxConnectionsPerIP, openFileLimit())
	return cfg
}

// Handler is the HTTP handler of every API (and of the seal while sealed).
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.route) }

// Listen binds the HTTP listener (New already did); Addr tells where.
func (s *Server) Listen() error {
	if s.ln != nil {
		return nil
	}
	ln, err := connhold.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return err
	}
	s.ln = netutil.LimitListener(limitPerSource(ln, s.cfg.MaxConnectionsPerIP), s.cfg.MaxConnections)
	return nil
}

// Addr is the bound address (after Listen).
func (s *Server) Addr() string { return s.ln.Addr().String() }

// URL is the base URL of the APIs (after Listen): https when TLS is on.
func (s *Server) URL() string {
	if s.cfg.PublicURL != "" {
		return s.cfg.PublicURL
	}
	scheme := "http://"
	if s.tls != nil {
		scheme = "https://"
	}
	host, port, err := net.SplitHostPort(s.Addr())
	if err != nil {
		return scheme + s.Addr()
	}
	return scheme + net.JoinHostPort(reachableHost(host), port)
}

// ParsePublicURL validates a --public-url: an http or https URL with a host
// and nothing after it but an optional "/". It returns it without the "/".
func ParsePublicURL(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", fmt.Errorf("public URL %q: give the scheme and host (and port) clients use, like https://keyline.example.com:8443", raw)
	}
	return strings.TrimSuffix(raw, "/"), nil
}

// reachableHost is host, or this machine's name when host is empty or
// binds every interface, since 0.0.0.0 or :: is no address to connect to.
func reachableHost(host string) string {
	if ip, err := netip.ParseAddr(host); host != "" && (err != nil || !ip.IsUnspecified()) {
		return host
	}
	if name, err := os.Hostname(); err == nil && name != "" {
		return name
	}
	return "localhost"
}

// Serve serves HTTP (HTTPS only, with TLS) until ctx ends, then shuts down
// gracefully.
func (s *Server) Serve(ctx context.Context) error {
	if s.ln == nil {
		if err := s.Listen(); err != nil {
			return err
		}
	}
	// The TLS handshake must finish within ReadHeaderTimeout too. Bodies
	// and writes have per-request deadlines (withDeadlines), not the
	// server's whole-request ones, which would cut event streams.
	s.http = &http.Server{Handler: withDeadlines(s.handler(), s.cfg.RequestBodyTimeout, s.cfg.WriteTimeout),
		TLSConfig: s.tls, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: s.cfg.IdleTimeout}
	errc := make(chan error, 1)
	go func() {
		if s.tls != nil {
			errc <- s.http.ServeTLS(s.ln, "", "")
			return
		}
		errc <- s.http.Serve(s.ln)
	}()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return s.http.Shutdown(sctx)
	}
}

// Close releases everything.
func (s *Server) Close() error {
	s.leaveCluster()
	s.closeSealedListeners()
	s.stop()
	s.Audit.Close()
	return s.db.Close()
}

// writeAdminKey writes the admin API key once, readable by the owner only.
func writeAdminKey(dir, key string) error {
	path := filepath.Join(dir, "admin-apikey")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(key + "\n")
	return errors.Join(werr, f.Sync(), f.Close())
}

func errsAs(err error) *errs.Error { return errs.As(err) }
