package volumetest

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/backup/volume/s3"
)

// S3Server is a versitygw process serving a temporary directory.
type S3Server struct {
	Endpoint  string // 127.0.0.1:port
	DataDir   string // objects are files at DataDir/<bucket>/<key>
	AccessKey string
	SecretKey string

	t      testing.TB
	bin    string
	stopMu sync.Mutex
	stop   func() // stops the running process; nil while stopped
}

// Config is an s3.Config for a bucket on the server.
func (s *S3Server) Config(bucket, prefix string) s3.Config {
	return s3.Config{Endpoint: s.Endpoint, Bucket: bucket, Prefix: prefix, AccessKey: s.AccessKey, SecretKey: s.SecretKey, PartSize: 5 << 20}
}

// findVersityGW looks in PATH, then in $(go env GOPATH)/bin.
func findVersityGW() string {
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = string(bytes.TrimSpace(out))
		}
	}
	for _, dir := range filepath.SplitList(gopath) {
		p := filepath.Join(dir, "bin", "versitygw")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// StartS3 runs versitygw on a free loopback port over a temporary
// directory until the test ends. It skips the test when the binary is not
// installed.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	bin := findVersityGW()
	if bin == "" {
		t.Skip("versitygw is not installed (CGO_ENABLED=0 go install github.com/versity/versitygw/cmd/versitygw@v1.8.0): skipping the S3 volume test")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &S3Server{Endpoint: addr, DataDir: t.TempDir(), AccessKey: "keylinetest", SecretKey: "keyline-test-secret", t: t, bin: bin}
	t.Cleanup(s.Stop)
	s.Start()
	return s
}

// NewBucketVolume makes a bucket on the server and a volume over it.
func (s *S3Server) NewBucketVolume(t testing.TB, bucket, prefix string) *s3.Volume {
	t.Helper()
	v, err := s3.New(s.Config(bucket, prefix))
	if err != nil {
		t.Fatal(err)
	}
	if err := v.EnsureBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	return v
}

// Start runs versitygw on the server's address and directory and waits until
// it listens: at StartS3, and again after Stop.
func (s *S3Server) Start() {
	t := s.t
	t.Helper()
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	if s.stop != nil {
		return
	}
	var out bytes.Buffer
	cmd := exec.Command(s.bin, "--port", s.Endpoint, "--quiet", "posix", s.DataDir)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+s.AccessKey, "ROOT_SECRET_KEY="+s.SecretKey)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	s.stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		c, err := net.DialTimeout("tcp", s.Endpoint, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			t.Fatalf("versitygw exited: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not listen on %s\n%s", s.Endpoint, out.String())
		}
	}
}

// Stop stops versitygw: connections to its address are refused until Start.
func (s *S3Server) Stop() {
	s.stopMu.Lock()
	defer s.stopMu.Unlock()
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
}
