package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/server"
	"github.com/keyline/keyline/internal/tlstest"
)

// runCLI runs keyline args in process and returns its exit code and stderr.
func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	root := newRoot(&out, &errOut)
	root.SetArgs(args)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	code := exitCode(root.ExecuteContext(ctx), &errOut)
	return code, errOut.String()
}

func TestServeRefusesBadSettingsBeforeWritingAnything(t *testing.T) {
	dir := t.TempDir()
	pairs := tlstest.IssueRefusable(t, dir)
	good, other, loose := pairs.Good, pairs.Other, pairs.Loose
	objectCreds := map[string]string{"AWS_ACCESS_KEY_ID": "AKID", "AWS_SECRET_ACCESS_KEY": "secret"}
	looseCreds := filepath.Join(dir, "s3-credentials")
	if err := os.WriteFile(looseCreds, []byte("AKID\nsecret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		code int
		want []string
	}{
		{name: "certificate without key", args: []string{"--tls-cert", good.CertFile}, code: exitUsage,
			want: []string{"--tls-cert needs --tls-key", "private key is missing"}},
		{name: "key without certificate", args: []string{"--tls-key", good.KeyFile}, code: exitUsage,
			want: []string{"--tls-key needs --tls-cert", "certificate is missing"}},
		{name: "key from the environment only", env: map[string]string{"KEYLINE_TLS_KEY": good.KeyFile}, code: exitUsage,
			want: []string{"certificate is missing"}},
		{name: "key readable by others", args: []string{"--tls-cert", loose.CertFile, "--tls-key", loose.KeyFile}, code: exitFailure,
			want: []string{loose.KeyFile, "readable by group or others"}},
		{name: "mismatched pair", args: []string{"--tls-cert", good.CertFile, "--tls-key", other.KeyFile}, code: exitFailure,
			want: []string{good.CertFile, other.KeyFile, "do not make a pair"}},
		{name: "flags win over the environment", args: []string{"--tls-cert", good.CertFile, "--tls-key", other.KeyFile},
			env: map[string]string{"KEYLINE_TLS_CERT": other.CertFile, "KEYLINE_TLS_KEY": other.KeyFile}, code: exitFailure,
			want: []string{good.CertFile, "do not make a pair"}},
		{name: "public URL without a scheme", args: []string{"--public-url", "keyline.example.com:8443"}, code: exitUsage,
			want: []string{"--public-url", "give the scheme and host"}},
		{name: "public URL from the environment", env: map[string]string{"KEYLINE_PUBLIC_URL": "https://keyline.example.com/api"}, code: exitUsage,
			want: []string{"--public-url", "/api"}},
		{name: "profiles beyond loopback", args: []string{"--pprof", "0.0.0.0:6060"}, code: exitUsage,
			want: []string{"--pprof", "give a loopback address"}},
		{name: "object store without a database", args: []string{"--object-store", "s3://keyline?endpoint=http://127.0.0.1:9"}, env: objectCreds,
			code: exitUsage, want: []string{"--object-store needs --database-url"}},
		{name: "object store without credentials", args: []string{"--object-store", "s3://keyline?endpoint=http://127.0.0.1:9", "--database-url", "postgres://k@/db"},
			env: map[string]string{"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}, code: exitUsage, want: []string{"--object-store needs credentials"}},
		{name: "object store URL with credentials in it", args: []string{"--object-store", "s3://AKID:secret@keyline", "--database-url", "postgres://k@/db"},
			env: objectCreds, code: exitUsage, want: []string{"--object-store", "must not hold credentials"}},
		{name: "object store credentials readable by others", args: []string{"--object-store", "s3://keyline", "--database-url", "postgres://k@/db",
			"--object-store-credentials", looseCreds}, code: exitUsage, want: []string{looseCreds, "readable by others"}},
		{name: "mismatched pair from the environment", env: map[string]string{"KEYLINE_TLS_CERT": good.CertFile, "KEYLINE_TLS_KEY": other.KeyFile},
			code: exitFailure, want: []string{good.CertFile, other.KeyFile, "do not make a pair"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			data := filepath.Join(t.TempDir(), "data")
			code, stderr := runCLI(t, append([]string{"serve", "--data-dir", data, "--listen", "127.0.0.1:0"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not say %q:\n%s", w, stderr)
				}
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("the data directory was created (%v) though the start failed", err)
			}
		})
	}
}

// keyline serve runs the collector at DefaultGCPercent unless GOGC says
// otherwise.
func TestServeSetsTheGCPercentUnlessGOGCIsSet(t *testing.T) {
	old := debug.SetGCPercent(100)
	defer debug.SetGCPercent(old)
	pair := tlstest.IssueRefusable(t, t.TempDir()).Good
	serve := func() int {
		debug.SetGCPercent(100)
		code, _ := runCLI(t, "serve", "--data-dir", t.TempDir(), "--tls-cert", pair.CertFile)
		if code != exitUsage {
			t.Fatalf("exit code %d", code)
		}
		return debug.SetGCPercent(100)
	}
	t.Setenv("GOGC", "")
	if got := serve(); got != server.DefaultGCPercent {
		t.Fatalf("GOGC unset: the collector's target is %d, want %d", got, server.DefaultGCPercent)
	}
	t.Setenv("GOGC", "100")
	if got := serve(); got != 100 {
		t.Fatalf("GOGC=100: the collector's target is %d, want it left alone", got)
	}
}

func TestServeSetsTheMemoryLimit(t *testing.T) {
	old := debug.SetMemoryLimit(-1)
	defer debug.SetMemoryLimit(old)
	// A certificate without its key stops the start right after the flags.
	pair := tlstest.IssueRefusable(t, t.TempDir()).Good
	if code, _ := runCLI(t, "serve", "--data-dir", t.TempDir(), "--memory-limit", "300MiB", "--tls-cert", pair.CertFile); code != exitUsage {
		t.Fatalf("exit code %d", code)
	}
	if got := debug.SetMemoryLimit(-1); got != 300<<20 {
		t.Fatalf("the runtime's memory limit is %d, want 300 MiB", got)
	}
}
