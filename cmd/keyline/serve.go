package main

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/keyline/keyline/internal/server"
	"github.com/spf13/cobra"
)

func newServeCmd(c *cli) *cobra.Command {
	cfg := server.Config{}
	var pprofAddr string
	var unseal unsealSecretFlags
	var objectCreds string
	cmd := &cobra.Command{
		Use:   "serve [--data-dir DIR] [--database-url URL] [--listen ADDR] [--tls-cert FILE --tls-key FILE]",
		Short: "Run every Keyline service in this process on embedded storage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			server.TuneRuntime(cfg.MemoryLimit)
			cfg.AdminAPIKey = os.Getenv("KEYLINE_ADMIN_APIKEY")
			cfg.MasterKeyFile = os.Getenv("KEYLINE_MASTER_KEY_FILE")
			if err := backupVolumeFromEnv(cmd, &cfg); err != nil {
				return err
			}
			if err := objectStoreFromEnv(cmd, &cfg, objectCreds); err != nil {
				return err
			}
			if err := addressesFromEnv(cmd, &cfg); err != nil {
				return err
			}
			if err := tlsFromEnv(cmd, &cfg); err != nil {
				return err
			}
			var err error
			if cfg.Unseal, err = unseal.secrets(); err != nil {
				return err
			}
			if v := os.Getenv("KEYLINE_DATABASE_URL"); v != "" && !cmd.Flags().Changed("database-url") {
				cfg.DatabaseURL = v
			}
			if v := os.Getenv("KEYLINE_NODE_ID"); v != "" && !cmd.Flags().Changed("node-id") {
				cfg.NodeID = v
			}
			if pprofAddr != "" {
				stop, err := servePprof(pprofAddr)
				if err != nil {
					return err
				}
				defer stop()
			}
			cfg.Logger = slog.New(slog.NewTextHandler(c.errOut, nil))
			s, err := server.New(ctxOf(cmd), cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.Listen(); err != nil {
				return err
			}
			keyFile := filepath.Join(cfg.DataDir, "admin-apikey")
			if s.AdminAPIKey != "" {
				fmt.Fprintf(c.out, "Created the admin API key (shown once; also in %s, mode 0600):\n  %s\n", keyFile, s.AdminAPIKey)
			}
			login := fmt.Sprintf("--apikey \"$(cat %s)\"", keyFile)
			if cfg.AdminAPIKey != "" {
				login = "--apikey \"$KEYLINE_ADMIN_APIKEY\""
			} else if _, err := os.Stat(keyFile); err != nil {
				login = "--apikey <your admin API key>"
			}
			if st := s.SealStatus(); st.Sealed {
				fmt.Fprintf(c.out, "Keyline is sealed: %d of %d unseal key shares are needed:\n  keyline operator unseal -a %s\n", st.T, st.N, s.URL())
			}
			fmt.Fprintf(c.out, "Keyline is serving on %s\n  web console: %s/\n  keyline login -a %s %s\n", s.URL(), s.URL(), s.URL(), login)
			return s.Serve(ctxOf(cmd))
		},
	}
	cmd.Flags().StringVar(&cfg.DataDir, "data-dir", "./keyline-data", "where Keyline keeps its data")
	cmd.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "the HTTP address of every API")
	f := cmd.Flags()
	f.StringVar(&cfg.KafkaHost, "kafka-host", "127.0.0.1", "the address deployments' Kafka listeners bind and advertise")
	f.Var(portRange{&cfg.KafkaPortMin, &cfg.KafkaPortMax}, "kafka-ports", "MIN-MAX ports for deployments' Kafka listeners (default: any free port)")
	f.IntVar(&cfg.KafkaMaxUnauthenticated, "kafka-max-unauthenticated", 256, "per deployment, the Kafka connections that have not logged in yet; more are closed at once")
	f.IntVar(&cfg.KafkaMaxUnauthenticatedPerIP, "kafka-max-unauthenticated-per-ip", 32, "per deployment, the Kafka connections from one address that have not logged in yet")
	f.DurationVar(&cfg.KafkaLoginTimeout, "kafka-login-timeout", 10*time.Second, "how long a new Kafka connection may take to log in")
	f.StringVar(&cfg.Backups.Kind, "backup-volume", "dir", "where backups are kept: dir (<data-dir>/backups) or s3 [$KEYLINE_BACKUP_VOLUME]")
	f.StringVar(&cfg.Backups.S3.Endpoint, "backup-s3-endpoint", "", "S3 endpoint host:port [$KEYLINE_BACKUP_S3_ENDPOINT]")
	f.StringVar(&cfg.Backups.S3.Bucket, "backup-s3-bucket", "", "S3 bucket of the backups [$KEYLINE_BACKUP_S3_BUCKET]")
	f.StringVar(&cfg.Backups.S3.Region, "backup-s3-region", "", "S3 region (default us-east-1) [$KEYLINE_BACKUP_S3_REGION]")
	f.StringVar(&cfg.Backups.S3.Prefix, "backup-s3-prefix", "", "key prefix ending in '/' [$KEYLINE_BACKUP_S3_PREFIX]")
	f.BoolVar(&cfg.Backups.S3.Secure, "backup-s3-https", false, "use HTTPS to reach S3 [$KEYLINE_BACKUP_S3_HTTPS=true]")
	f.StringVar(&cfg.ObjectStore, "object-store", "", "keep deployments' Kafka data in an S3-compatible bucket, s3://BUCKET?endpoint=http://HOST:PORT&region=R, instead of --data-dir; needs --database-url; credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or --object-store-credentials [$KEYLINE_OBJECT_STORE]")
	f.StringVar(&objectCreds, "object-store-credentials", "", "file (mode 0600) holding the object store's access key ID on its first line and secret key on its second")
	f.DurationVar(&cfg.ObjectFlushWindow, "object-flush-window", 5*time.Millisecond, "how long a produce on object storage waits for others to share its object")
	f.StringVar(&cfg.TLSCertFile, "tls-cert", "", "PEM certificate (chain) to serve HTTPS and Kafka SASL_SSL with; needs --tls-key [$KEYLINE_TLS_CERT]")
	f.StringVar(&cfg.TLSKeyFile, "tls-key", "", "PEM private key of --tls-cert, mode 0600 [$KEYLINE_TLS_KEY]")
	f.StringVar(&cfg.PublicURL, "public-url", "", "the APIs' base URL as clients reach it, for credentials (default: the --listen address) [$KEYLINE_PUBLIC_URL]")
	f.StringVar(&cfg.DatabaseURL, "database-url", "", "keep metadata in this PostgreSQL database (postgres://user@host/db) instead of SQLite in --data-dir; prefer the variable for a URL with a password [$KEYLINE_DATABASE_URL]")
	f.StringVar(&cfg.NodeID, "node-id", "", "this node's name among those sharing --database-url (default: a random id kept in --data-dir/node-id) [$KEYLINE_NODE_ID]")
	f.BoolVar(&cfg.Dev, "dev", false, "allow the dev seal: the master key in a file in --data-dir, not protected at rest (the default until 'keyline operator init')")
	f.Var(byteSize{&cfg.KafkaFetchMemory}, "kafka-fetch-memory", "memory all deployments' Kafka fetch responses may hold at once, e.g. 1GiB (default 1GiB)")
	f.Var(byteSize{&cfg.KafkaDeploymentFetchMemory}, "kafka-fetch-memory-per-deployment", "memory one deployment's Kafka fetch responses may hold at once (default 256MiB)")
	f.Var(byteSize{&cfg.KafkaRequestMemory}, "kafka-request-memory", "memory all deployments' large Kafka requests (produce) may hold at once (default 512MiB)")
	f.Var(byteSize{&cfg.KafkaDeploymentRequestMemory}, "kafka-request-memory-per-deployment", "memory one deployment's large Kafka requests may hold at once; it also caps one request, at most 100MiB (default 256MiB)")
	f.Var(byteSize{&cfg.MemoryLimit}, "memory-limit", "memory the process should stay within, e.g. 1GiB: the Go runtime's soft limit (GOMEMLIMIT), and the Kafka memory budgets not given are a quarter (fetches) and an eighth (requests) of it (default: no limit)")
	f.StringVar(&cfg.KafkaAdvertisedHost, "kafka-advertised-host", "", "the host Kafka clients are told to connect to (default: --kafka-host, or this host's name for 0.0.0.0) [$KEYLINE_KAFKA_ADVERTISED_HOST]")
	f.DurationVar(&cfg.RequestBodyTimeout, "http-body-timeout", 30*time.Second, "how long a request's body may take to arrive")
	f.DurationVar(&cfg.WriteTimeout, "http-write-timeout", 30*time.Second, "how long one response write may take (streams may idle between writes)")
	f.DurationVar(&cfg.IdleTimeout, "http-idle-timeout", 120*time.Second, "when an idle keep-alive connection is closed")
	f.IntVar(&cfg.MaxConnections, "http-max-connections", 0, "HTTP connections open at once; more wait to be accepted (default 1024, or a quarter of RLIMIT_NOFILE when lower)")
	f.IntVar(&cfg.MaxConnectionsPerIP, "http-max-connections-per-ip", 0, "HTTP connections open at once from one address; more are closed at once (default a quarter of --http-max-connections)")
	unseal.register(f, "", "the")
	f.StringVar(&pprofAddr, "pprof", "", "serve Go's profiles (net/http/pprof) on this loopback address, apart from the APIs, for the operator (off by default)")
	return cmd
}

// servePprof serves net/http/pprof on its own listener. Profiles show
// the process's inner workings and their endpoints take no credentials, so
// only a loopback address is accepted: only someone on this host (the
// operator) reaches them.
func servePprof(addr string) (stop func(), err error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, usageError{fmt.Errorf("--pprof %q: %w", addr, err)}
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, usageError{fmt.Errorf("--pprof %q: give a loopback address (127.0.0.1:PORT): profiles take no credentials", addr)}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--pprof: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return func() { srv.Close() }, nil
}

// tlsFromEnv completes the certificate settings from the environment
// (flags win) and insists on both files or neither.
func tlsFromEnv(cmd *cobra.Command, cfg *server.Config) error {
	for flag, dst := range map[string]*string{"tls-cert": &cfg.TLSCertFile, "tls-key": &cfg.TLSKeyFile} {
		if v := os.Getenv(envOf(flag)); v != "" && !cmd.Flags().Changed(flag) {
			*dst = v
		}
	}
	switch {
	case cfg.TLSCertFile != "" && cfg.TLSKeyFile == "":
		return usageError{fmt.Errorf("--tls-cert needs --tls-key (or KEYLINE_TLS_KEY): the certificate's private key is missing")}
	case cfg.TLSCertFile == "" && cfg.TLSKeyFile != "":
		return usageError{fmt.Errorf("--tls-key needs --tls-cert (or KEYLINE_TLS_CERT): the certificate is missing")}
	}
	return nil
}

// addressesFromEnv completes the advertised addresses from the environment
// (flags win) and checks the public URL.
func addressesFromEnv(cmd *cobra.Command, cfg *server.Config) error {
	for flag, dst := range map[string]*string{"public-url": &cfg.PublicURL, "kafka-advertised-host": &cfg.KafkaAdvertisedHost} {
		if v := os.Getenv(envOf(flag)); v != "" && !cmd.Flags().Changed(flag) {
			*dst = v
		}
	}
	if _, err := server.ParsePublicURL(cfg.PublicURL); err != nil {
		return usageError{fmt.Errorf("--public-url: %w", err)}
	}
	return nil
}

// envOf is the environment variable that stands in for a serve flag.
func envOf(flag string) string {
	return "KEYLINE_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// backupVolumeFromEnv completes the backup volume settings from the
// environment: flags win, and the S3 credentials come only from it
// (KEYLINE_BACKUP_S3_ACCESS_KEY, KEYLINE_BACKUP_S3_SECRET_KEY), so that
// they never show in a process list.
func backupVolumeFromEnv(cmd *cobra.Command, cfg *server.Config) error {
	b := &cfg.Backups
	for flag, dst := range map[string]*string{"backup-volume": &b.Kind, "backup-s3-endpoint": &b.S3.Endpoint,
		"backup-s3-bucket": &b.S3.Bucket, "backup-s3-region": &b.S3.Region, "backup-s3-prefix": &b.S3.Prefix} {
		if v := os.Getenv(envOf(flag)); v != "" && !cmd.Flags().Changed(flag) {
			*dst = v
		}
	}
	if v := os.Getenv("KEYLINE_BACKUP_S3_HTTPS"); v == "true" && !cmd.Flags().Changed("backup-s3-https") {
		b.S3.Secure = true
	}
	b.S3.AccessKey = os.Getenv("KEYLINE_BACKUP_S3_ACCESS_KEY")
	b.S3.SecretKey = os.Getenv("KEYLINE_BACKUP_S3_SECRET_KEY")
	if b.Kind == "s3" && (b.S3.Endpoint == "" || b.S3.Bucket == "") {
		return usageError{fmt.Errorf("--backup-volume s3 needs --backup-s3-endpoint and --backup-s3-bucket (or KEYLINE_BACKUP_S3_ENDPOINT and KEYLINE_BACKUP_S3_BUCKET)")}
	}
	return nil
}

// portRange parses MIN-MAX into two ports.
type portRange struct{ min, max *int }

func (p portRange) String() string {
	if p.min == nil || *p.min == 0 {
		return ""
	}
	return fmt.Sprintf("%d-%d", *p.min, *p.max)
}

func (p portRange) Set(s string) error {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || a < 1 || b > 65535 || a > b {
		return fmt.Errorf("want MIN-MAX with 1 <= MIN <= MAX <= 65535, like 9093-9192")
	}
	*p.min, *p.max = a, b
	return nil
}

func (portRange) Type() string { return "range" }

// byteSize parses a size such as 256MiB or 1GB into bytes.
type byteSize struct{ n *int64 }

func (b byteSize) String() string {
	if b.n == nil || *b.n == 0 {
		return ""
	}
	return humanize.IBytes(uint64(*b.n))
}

func (b byteSize) Set(s string) error {
	n, err := humanize.ParseBytes(s)
	if err != nil || n == 0 || n > math.MaxInt64 {
		return fmt.Errorf("want a size such as 256MiB or 1GiB")
	}
	*b.n = int64(n)
	return nil
}

func (byteSize) Type() string { return "size" }
