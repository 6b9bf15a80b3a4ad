package objlog_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
	"github.com/keyline/keyline/internal/streams/objlog"
	"github.com/keyline/keyline/internal/streams/seglog"
)

const testBucket = "keyline-streams"

// env is a real S3 server (versitygw), reached through a proxy a test can
// cut, and a metadata database: SQLite, or PostgreSQL when
// KEYLINE_TEST_DATABASE_URL is set.
type env struct {
	s3     *volumetest.S3Server
	proxy  *proxy
	bucket *objlog.Bucket
	dbDir  string
	dbURL  string
	db     *store.DB
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := volumetest.StartS3(t)
	px := startProxy(t, srv.Endpoint)
	b, err := objlog.NewBucket(objlog.BucketConfig{Endpoint: px.addr, Bucket: testBucket, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureBucket(context.Background()); err != nil {
		t.Fatal(err)
	}
	e := &env{s3: srv, proxy: px, bucket: b, dbDir: t.TempDir(), dbURL: storetest.URL(t)}
	e.db = storetest.OpenAt(t, e.dbDir, e.dbURL)
	return e
}

func testDEK(id string, fill byte) *seglog.DEK {
	return &seglog.DEK{ID: id, Key: bytes.Repeat([]byte{fill}, 32)}
}

func (e *env) open(t *testing.T, dek *seglog.DEK, mod ...func(*objlog.Options)) (*objlog.Store, error) {
	t.Helper()
	opts := objlog.Options{StoreID: "dep1", Keys: []*seglog.DEK{dek}}
	for _, m := range mod {
		m(&opts)
	}
	st, err := objlog.Open(context.Background(), e.db, e.bucket, opts)
	if err == nil {
		t.Cleanup(func() { st.Close() })
	}
	return st, err
}

func (e *env) mustOpen(t *testing.T, mod ...func(*objlog.Options)) *objlog.Store {
	t.Helper()
	st, err := e.open(t, testDEK("dek-1", 7), mod...)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// objects lists the store's objects as files of the S3 server.
func (e *env) objects(t *testing.T) []string {
	t.Helper()
	var names []string
	dir := filepath.Join(e.s3.DataDir, testBucket, objlog.ObjectPrefix("dep1"))
	des, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	for _, de := range des {
		if !de.IsDir() {
			names = append(names, de.Name())
		}
	}
	return names
}

// stored is every byte the deployment's data left outside the process:
// the bucket's files, and the database (its SQLite files, or a pg_dump).
func (e *env) stored(t *testing.T) []byte {
	t.Helper()
	var all bytes.Buffer
	for _, root := range []string{e.s3.DataDir, e.dbDir} {
		filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() {
				b, _ := os.ReadFile(path)
				all.Write(b)
			}
			return nil
		})
	}
	if e.dbURL != "" {
		all.Write(pgDump(t, e.dbURL))
	}
	return all.Bytes()
}

// pgDump dumps the test's schema, data included.
func pgDump(t *testing.T, dbURL string) []byte {
	t.Helper()
	bin, err := exec.LookPath("pg_dump")
	if err != nil {
		matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
		if len(matches) == 0 {
			t.Fatal("pg_dump is not installed")
		}
		bin = matches[len(matches)-1]
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	schema := q.Get("search_path")
	q.Del("search_path")
	u.RawQuery = q.Encode()
	out, err := exec.Command(bin, "--dbname="+u.String(), "--schema="+schema).CombinedOutput()
	if err != nil {
		t.Fatalf("pg_dump: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("objlog_batches")) {
		t.Fatalf("pg_dump holds no objlog table:\n%s", out)
	}
	return out
}

// proxy forwards TCP to the S3 server until cut: then it drops every
// connection and refuses new ones, as an unreachable server would.
type proxy struct {
	addr   string
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: ln.Addr().String(), target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.conns[c] = true
	p.mu.Unlock()
	u, err := net.Dial("tcp", p.target)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[u] = true
	p.mu.Unlock()
	go func() { io.Copy(u, c); u.Close() }()
	io.Copy(c, u)
	c.Close()
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

func (p *proxy) restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = false
}
