// Package e2e drives Keyline as a user does: the real server over HTTP, the
// built binary as a CLI and as a process that can be killed.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/server"
)

const adminKey = "e2e-admin-api-key-0123456789abcdefghijklmnopqrstuv"

// env is one in-process Keyline serving real HTTP on loopback.
type env struct {
	t     *testing.T
	srv   *server.Server
	url   string
	admin *client.Client
	clock *clock.Fake
	dir   string
}

// start runs a Keyline on a fresh data directory with a fake clock.
func start(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	return startIn(t, dir, clock.NewFake(time.Now().UTC().Truncate(time.Second)))
}

// startIn runs a Keyline on dir; opts adjust its configuration.
func startIn(t *testing.T, dir string, clk *clock.Fake, opts ...func(*server.Config)) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cfg := server.Config{DataDir: dir, Listen: "127.0.0.1:0", AdminAPIKey: adminKey, Clock: clk, Logger: testLogger(t)}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := server.New(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	e := &env{t: t, srv: srv, url: srv.URL(), clock: clk, dir: dir}
	e.admin = client.New(e.url, adminKey)
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	return e
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/keyline once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "keyline-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "keyline")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/keyline/keyline/cmd/keyline").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is `keyline serve` running as a child process.
type proc struct {
	cmd    *exec.Cmd
	url    string
	output *bytes.Buffer
	mu     *sync.Mutex
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serveProcess starts `keyline serve` on dir and waits until it answers.
func serveProcess(t *testing.T, dir string, extraEnv ...string) *proc {
	t.Helper()
	return serveProcessWith(t, dir, serveOptions{env: extraEnv})
}

// serveOptions adjust how serveProcessWith starts `keyline serve`.
type serveOptions struct {
	args []string
	env  []string
	// ca, when set, is the CA of the server's certificate: the server is
	// reached over https and trusted through it.
	ca *x509.CertPool
	// sealed: the server starts sealed (its /healthz answers 503), so
	// the wait is for its seal status.
	sealed bool
}

// serveProcessWith starts `keyline serve` on dir with more arguments and
// environment, and waits until it answers.
func serveProcessWith(t *testing.T, dir string, o serveOptions) *proc {
	t.Helper()
	addr := freePort(t)
	cmd := exec.Command(binary(t), append([]string{"serve", "--data-dir", dir, "--listen", addr}, o.args...)...)
	cmd.Env = append(append(os.Environ(), "KEYLINE_ADMIN_APIKEY="+adminKey), o.env...)
	var mu sync.Mutex
	buf := &bytes.Buffer{}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			mu.Lock()
			buf.WriteString(sc.Text() + "\n")
			mu.Unlock()
		}
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, url: "http://" + addr, output: buf, mu: &mu}
	hc := http.DefaultClient
	if o.ca != nil {
		p.url = "https://" + addr
		hc = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: o.ca}}}
	}
	t.Cleanup(func() { p.kill(); pw.Close() })
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		ready := "/healthz"
		if o.sealed {
			ready = "/v1/sys/seal-status"
		}
		resp, err := hc.Get(p.url + ready)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if cmd.ProcessState != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("keyline serve did not start:\n%s", p.logs())
	return nil
}

func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// kill stops the process with SIGKILL: no shutdown code runs.
func (p *proc) kill() {
	if p.cmd.Process != nil && p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.cmd.Wait()
	}
}

// cli runs the keyline binary as a client with its own home directory.
type cli struct {
	t    *testing.T
	home string
	url  string
	env  []string // more environment for every command
}

func newCLI(t *testing.T, url string) *cli {
	return &cli{t: t, home: t.TempDir(), url: url}
}

// run executes keyline args... and returns stdout, stderr and the exit code.
func (c *cli) run(args ...string) (string, string, int) {
	c.t.Helper()
	cmd := exec.Command(binary(c.t), args...)
	cmd.Env = append(append(os.Environ(), "KEYLINE_HOME="+c.home, "KEYLINE_ENDPOINT="+c.url), c.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// must runs keyline and fails the test unless it exits 0.
func (c *cli) must(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(args...)
	if code != 0 {
		c.t.Fatalf("keyline %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}
