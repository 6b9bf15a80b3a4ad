package streams

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/streams/broker"
)

// fdExhaustionChild marks the re-executed test binary that lowers its own
// RLIMIT_NOFILE: the limit is process-wide, so the rest of the tests must
// not share it.
const fdExhaustionChild = "KEYLINE_TEST_FD_EXHAUSTION_CHILD"

func TestListenerSurvivesRunningOutOfFileDescriptors(t *testing.T) {
	if os.Getenv(fdExhaustionChild) != "" {
		exhaustFileDescriptors(t)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestListenerSurvivesRunningOutOfFileDescriptors$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), fdExhaustionChild+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("with few file descriptors: %v\n%s", err, out)
	}
	t.Logf("%s", out)
}

// exhaustFileDescriptors runs in the child: it serves a deployment's
// socket, uses up every file descriptor with a burst of connections, lets
// them go, and checks that the socket answers Kafka again.
func exhaustFileDescriptors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	f := newFront(ln, log)
	defer f.close()
	h := newHandoff(ln.Addr(), nil)
	refuse := func(context.Context, string, string) (broker.Access, error) { return broker.NoAccess, errors.New("no") }
	brk, err := broker.New(broker.Config{Listener: h, Storage: lockedStorage{"locked"}, Authenticate: refuse, Logger: log,
		MaxConnections: 1 << 20, MaxPreAuthConnections: 1 << 20, MaxPreAuthPerIP: 1 << 20, LoginTimeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	go brk.Serve(context.Background())
	defer brk.Close()
	f.attach(h)

	open, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	lim := syscall.Rlimit{Cur: uint64(len(open) + 64)}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	lim.Max = old.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	// spare keeps one descriptor back: once the burst used up the others,
	// it becomes the client side of a connection the listener cannot accept.
	spare, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	for {
		c, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
		if errors.Is(err, syscall.EMFILE) {
			break
		}
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		conns = append(conns, c)
		if len(conns) > 1000 {
			t.Fatal("a limit of 64 file descriptors did not run out")
		}
	}
	spare.Close()
	last, err := net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second)
	if err != nil {
		t.Fatalf("dial with the spare descriptor: %v", err)
	}
	conns = append(conns, last)
	deadline := time.Now().Add(30 * time.Second)
	for f.status().AcceptErrors == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the listener never failed to accept")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if h := f.status(); h.Healthy || h.LastError == "" {
		t.Fatalf("listener health while out of descriptors: %+v", h)
	}
	t.Logf("%d connections used up the descriptors; the listener said %q", len(conns), f.status().LastError)
	for _, c := range conns {
		c.Close()
	}

	var c net.Conn
	for c == nil { // the broker frees the server sides as it sees them close
		if c, err = net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second); err != nil && !errors.Is(err, syscall.EMFILE) || time.Now().After(deadline) {
			t.Fatalf("dial after the burst: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	resp, err := apiVersions(c)
	if err != nil {
		t.Fatalf("ApiVersions after running out of descriptors: %v (listener: %+v)", err, f.status())
	}
	if resp.ErrorCode != 0 || len(resp.ApiKeys) == 0 {
		t.Fatalf("ApiVersions answered error %d with %d APIs", resp.ErrorCode, len(resp.ApiKeys))
	}
	if h := f.status(); !h.Healthy || h.AcceptErrors == 0 {
		t.Fatalf("listener health once accepting again: %+v", h)
	}
}

// apiVersions asks c, a Kafka connection, for its API versions (v0).
func apiVersions(c net.Conn) (*kmsg.ApiVersionsResponse, error) {
	req := kmsg.NewPtrApiVersionsRequest()
	frame := binary.BigEndian.AppendUint32(nil, 0)
	frame = binary.BigEndian.AppendUint16(frame, uint16(req.Key()))
	frame = binary.BigEndian.AppendUint16(frame, 0)              // version
	frame = binary.BigEndian.AppendUint32(frame, 7)              // correlation ID
	frame = binary.BigEndian.AppendUint16(frame, uint16(0xffff)) // no client ID
	frame = req.AppendTo(frame)
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	if _, err := c.Write(frame); err != nil {
		return nil, err
	}
	var size [4]byte
	if _, err := io.ReadFull(c, size[:]); err != nil {
		return nil, err
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(c, body); err != nil {
		return nil, err
	}
	if len(body) < 4 || binary.BigEndian.Uint32(body) != 7 {
		return nil, errors.New("the answer does not carry the request's correlation ID")
	}
	resp := kmsg.NewPtrApiVersionsResponse()
	return resp, resp.ReadFrom(body[4:])
}
