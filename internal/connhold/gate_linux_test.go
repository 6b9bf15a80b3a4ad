package connhold

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dialFrom connects to ln from src (a loopback address of its own, standing
// in for another machine) within d.
func dialFrom(src string, ln net.Listener, d time.Duration) (net.Conn, error) {
	dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: d}
	return dl.Dial("tcp", ln.Addr().String())
}

// An address shut out cannot connect (its SYNs are dropped, so its dial
// times out instead of being refused); other addresses and the address's
// connections opened before are served; after the delay it connects again.
func TestShutAddressCannotConnectUntilTheDelayEnds(t *testing.T) {
	ln, err := Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	echoServer(ln)
	const delay = 3 * time.Second
	g := NewGate(ln, delay)
	if g == nil {
		t.Fatal("no gate on a TCP listener")
	}
	defer g.Close()
	before, err := dialFrom("127.0.0.2", ln, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer before.Close()

	if !g.Shut(netip.MustParseAddr("127.0.0.2")) {
		t.Fatalf("not shut: %+v", g.Stats())
	}
	shutAt := time.Now()
	if c, err := dialFrom("127.0.0.2", ln, 500*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("a shut address connected")
	} else if !errors.Is(err, os.ErrDeadlineExceeded) && !isTimeout(err) {
		t.Fatalf("dial from a shut address: %v, want a timeout (its SYN dropped)", err)
	}
	other, err := dialFrom("127.0.0.3", ln, 10*time.Second)
	if err != nil {
		t.Fatalf("another address: %v", err)
	}
	echo(t, other)
	other.Close()
	echo(t, before) // opened before: its packets still pass
	if s := g.Stats(); s.Shut != 1 || s.ShutTotal != 1 || s.LastError != "" {
		t.Fatalf("stats %+v", s)
	}

	// Let in again after the delay: a dial started then succeeds (the
	// kernel's SYN retries carry a dial started during the delay over it).
	time.Sleep(time.Until(shutAt.Add(delay + 200*time.Millisecond)))
	again, err := dialFrom("127.0.0.2", ln, 10*time.Second)
	if err != nil {
		t.Fatalf("after the delay: %v", err)
	}
	echo(t, again)
	again.Close()
	if s := g.Stats(); s.Shut != 0 {
		t.Fatalf("stats %+v after the delay, want none shut", s)
	}
}

// An address shut out again soon after its last shutting out ended is shut
// out twice as long; one that stays away as long as it was shut out starts
// over.
func TestAddressShutOutAgainIsShutOutLonger(t *testing.T) {
	ln, err := Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	echoServer(ln)
	const delay = 2 * time.Second
	g := NewGate(ln, delay)
	defer g.Close()
	src := netip.MustParseAddr("127.0.0.2")
	shutFor := func() time.Duration {
		g.mu.Lock()
		defer g.mu.Unlock()
		return g.offences[src].d
	}
	g.Shut(src)
	if !g.Shut(src) || shutFor() != delay {
		t.Fatalf("shut out for %v, want %v (a second refusal while shut out is not a new offence)", shutFor(), delay)
	}
	time.Sleep(delay + 100*time.Millisecond)
	g.Shut(src) // right after the first ended
	again := time.Now()
	if shutFor() != 2*delay {
		t.Fatalf("shut out again at once for %v, want %v", shutFor(), 2*delay)
	}
	// Still shut out past the first delay: a dial then times out.
	time.Sleep(time.Until(again.Add(delay + delay/4)))
	if c, err := dialFrom("127.0.0.2", ln, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("connected while shut out for twice the delay")
	}
	time.Sleep(time.Until(again.Add(2*delay + 100*time.Millisecond)))
	c, err := dialFrom("127.0.0.2", ln, 10*time.Second)
	if err != nil {
		t.Fatalf("after twice the delay: %v", err)
	}
	c.Close()
	// Away as long as it was shut out: a first offence again.
	time.Sleep(time.Until(again.Add(4*delay + 100*time.Millisecond)))
	g.Shut(src)
	if shutFor() != delay {
		t.Fatalf("shut out after staying away for %v, want %v", shutFor(), delay)
	}
}

// IPv6 sources are matched on all 16 bytes: ::1 shut, another ::1-like
// address is not confused with it, and IPv4 dialers to a dual-stack socket
// are matched as IPv4.
func TestGateMatchesIPv6AndIPv4OnADualStackSocket(t *testing.T) {
	ln, err := Listen("tcp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack socket here: %v", err)
	}
	defer ln.Close()
	echoServer(ln)
	g := NewGate(ln, time.Minute)
	defer g.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	dial := func(src, dst string) error {
		dl := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 500 * time.Millisecond}
		c, err := dl.Dial("tcp", net.JoinHostPort(dst, itoa(port)))
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial("::1", "::1"); err != nil {
		t.Skipf("no IPv6 loopback here: %v", err)
	}
	g.Shut(netip.MustParseAddr("::1"))
	g.Shut(netip.MustParseAddr("127.0.0.2"))
	if err := dial("::1", "::1"); err == nil {
		t.Fatal("::1 shut, but it connected")
	}
	if err := dial("127.0.0.2", "127.0.0.1"); err == nil {
		t.Fatal("127.0.0.2 shut, but it connected to the dual-stack socket")
	}
	if err := dial("127.0.0.3", "127.0.0.1"); err != nil {
		t.Fatalf("127.0.0.3 is not shut: %v", err)
	}
}

// Refuse holds while the holder has room, then closes at once and shuts
// the source out.
func TestRefuseShutsTheSourceOnceTheHolderIsFull(t *testing.T) {
	ln, err := Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g := NewGate(ln, time.Minute)
	defer g.Close()
	h := New(1, time.Minute)
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	var got [][2]bool
	for range 2 {
		c, err := dialFrom("127.0.0.2", ln, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held, shut := h.Refuse(<-accepted, g)
		got = append(got, [2]bool{held, shut})
	}
	if got[0] != [2]bool{true, false} || got[1] != [2]bool{false, true} {
		t.Fatalf("(held, shut) = %v, want the first held and the second's source shut", got)
	}
	if _, err := dialFrom("127.0.0.2", ln, 500*time.Millisecond); err == nil {
		t.Fatal("the shut source connected")
	}
}

// Go makes listeners Multipath TCP where the kernel has it, and those take
// no filter: NewGate says so with nil rather than a gate that cannot shut.
func TestGateOfAMultipathListenerIsNil(t *testing.T) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(true)
	ln, err := lc.Listen(t.Context(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rc, _ := ln.(*net.TCPListener).SyscallConn()
	proto := 0
	rc.Control(func(fd uintptr) { proto, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL) })
	if proto != unix.IPPROTO_MPTCP {
		t.Skip("no Multipath TCP here")
	}
	if g := NewGate(ln, time.Second); g != nil {
		t.Fatal("a gate on a Multipath TCP socket")
	}
}

func echo(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	if _, err := io.ReadFull(c, b); err != nil || string(b) != "ping" {
		t.Fatalf("echo: %q, %v", b, err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func itoa(n int) string { return strconv.Itoa(n) }

// echoServer echoes what each connection to ln sends, until ln closes.
func echoServer(ln net.Listener) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
}
