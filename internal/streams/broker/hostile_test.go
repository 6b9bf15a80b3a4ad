package broker

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// emfileListener fails its first accepts as a process out of descriptors does.
type emfileListener struct {
	net.Listener
	failures atomic.Int32
}

func (l *emfileListener) Accept() (net.Conn, error) {
	if l.failures.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// syncBuffer collects log output written from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), substr)
}

func apiVersionsAnswered(t *testing.T, tb testBroker) bool {
	rc := dialRaw(t, tb)
	defer rc.nc.Close()
	req := kmsg.NewPtrApiVersionsRequest()
	rc.send(req, 1)
	return rc.recv(req.ResponseKind(), false) == nil
}

func TestListenerKeepsAcceptingAfterTooManyOpenFiles(t *testing.T) {
	var logs syncBuffer
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	flaky := &emfileListener{Listener: ln}
	flaky.failures.Store(8)
	tb := startBroker(t, nil, func(c *Config) {
		c.Listener = flaky
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	if !apiVersionsAnswered(t, tb) {
		t.Fatal("the listener stopped answering after accept failed with EMFILE")
	}
	h := tb.ListenerHealth()
	if !h.Healthy || h.AcceptErrors != 8 || !strings.Contains(h.LastError, "too many open files") {
		t.Fatalf("health after recovery: %+v", h)
	}
	if n := logs.lines("kafka listener cannot accept"); n != 1 {
		t.Fatalf("%d log lines for 8 accept failures, want 1 (rate-limited)", n)
	}
}

// TestListenerSurvivesDescriptorExhaustion runs the real thing in a child
// process whose RLIMIT_NOFILE is low: connections are opened until the
// process has no descriptor left, so the broker's accepts fail with
// EMFILE; once they are closed, the same listener must answer again.
func TestListenerSurvivesDescriptorExhaustion(t *testing.T) {
	if os.Getenv("KEYLINE_EMFILE_CHILD") == "" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestListenerSurvivesDescriptorExhaustion$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), "KEYLINE_EMFILE_CHILD=1")
		out, err := cmd.CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestListenerSurvivesDescriptorExhaustion")) {
			t.Fatalf("child: %v\n%s", err, out)
		}
		t.Logf("child:\n%s", out)
		return
	}
	tb := startBroker(t, nil)
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	low := lim
	low.Cur = 128
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	// Take every descriptor left, then give one back for a client to
	// connect with: the broker has none left to accept the connection.
	var held []*os.File
	for len(held) < 10000 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			break
		}
		held = append(held, f)
	}
	held[0].Close()
	c, err := net.DialTimeout("tcp", tb.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "an accept to fail for want of descriptors", func() bool { return tb.ListenerHealth().AcceptErrors > 0 })
	t.Logf("%d descriptors held, %d accepts failed", len(held), tb.ListenerHealth().AcceptErrors)
	for _, f := range held[1:] {
		f.Close()
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the listener to answer again", func() bool { return apiVersionsAnswered(t, tb) })
	if h := tb.ListenerHealth(); !h.Healthy || !strings.Contains(h.LastError, "too many open files") {
		t.Fatalf("health after recovery: %+v", h)
	}
}

func TestStrangersCannotHoldTheSlotsOfClientsWithCredentials(t *testing.T) {
	var logs syncBuffer
	tb := startBroker(t, nil, func(c *Config) {
		c.MaxConnections = 200
		c.MaxPreAuthPerSource = 20
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	tb.mustCreate(t, "orders", 1)
	// 300 connections from another address, each a frame that never
	// finishes.
	stranger := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	var strangers []net.Conn
	for range 300 {
		c, err := stranger.Dial("tcp", tb.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{0, 0, 0, 100, 0})
		strangers = append(strangers, c)
	}
	t.Cleanup(func() {
		for _, c := range strangers {
			c.Close()
		}
	})
	waitFor(t, "the connections over the per-source limit to be closed", func() bool { return tb.PreAuthConnections() == 20 })
	cl := tb.client(t, writerKey, kgo.DefaultProduceTopic("orders"))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 4 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte{byte(i)}}).FirstErr(); err != nil {
			t.Fatalf("a client with credentials could not produce next to strangers: %v", err)
		}
	}
	if got := tb.PreAuthConnections(); got > 20 {
		t.Fatalf("%d connections wait to log in, over the per-source limit of 20", got)
	}
	if n := logs.lines("too many connections waiting to log in"); n < 1 || n > 2 {
		t.Fatalf("%d log lines for 280 refused connections, want one or two", n)
	}
}

func TestConnectionThatNeverLogsInIsClosedAtTheLoginTimeout(t *testing.T) {
	tb := startBroker(t, nil, func(c *Config) { c.LoginTimeout = 300 * time.Millisecond })
	rc := dialRaw(t, tb)
	rc.nc.Write([]byte{0, 0, 0, 50, 0, 18}) // a frame it never finishes
	start := time.Now()
	if !rc.closed() {
		t.Fatal("the connection was not closed")
	}
	if since := time.Since(start); since > 8*time.Second {
		t.Fatalf("closed after %v, not at the login timeout", since)
	}
	waitFor(t, "the slot to be given back", func() bool { return tb.PreAuthConnections() == 0 })
	// A login within the timeout keeps the connection past it.
	ok := dialRaw(t, tb)
	ok.login(readerKey)
	time.Sleep(600 * time.Millisecond)
	req := kmsg.NewPtrMetadataRequest()
	ok.send(req, 3)
	if err := ok.recv(req.ResponseKind(), false); err != nil {
		t.Fatalf("a logged-in connection was closed at the login timeout: %v", err)
	}
	if n := tb.PreAuthConnections(); n != 0 {
		t.Fatalf("a logged-in connection still counts as waiting to log in (%d)", n)
	}
}
