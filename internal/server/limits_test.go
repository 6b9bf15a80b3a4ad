package server

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/netutil"

	"github.com/keyline/keyline/internal/connhold"
)

func TestConnectionLimitsLeaveDescriptorsToOthers(t *testing.T) {
	for _, tc := range []struct {
		total, perSource int
		nofile           uint64
		want, wantPer    int
	}{
		{0, 0, 1 << 20, 1024, 256},  // plenty of descriptors: the default
		{0, 0, 0, 1024, 256},        // unknown limit
		{0, 0, 1024, 256, 64},       // a quarter of a low limit
		{0, 0, 64, 16, 16},          // small: one source may use them all
		{500, 0, 1024, 500, 125},    // the operator's word wins
		{500, 1000, 1024, 500, 500}, // never more per source than in all
		{100, 10, 1 << 20, 100, 10}, // both set
	} {
		total, per := connectionLimits(tc.total, tc.perSource, tc.nofile)
		if total != tc.want || per != tc.wantPer {
			t.Errorf("connectionLimits(%d, %d, %d) = %d, %d; want %d, %d", tc.total, tc.perSource, tc.nofile, total, per, tc.want, tc.wantPer)
		}
	}
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer says whether the server closed c within d.
func closedByServer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// acceptAll accepts from ln until it is closed, handing each connection on.
func acceptAll(ln net.Listener) <-chan net.Conn {
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	return accepted
}

// One address holding its share of the listener's slots does not keep
// another's connection waiting: its next one is closed at once, and a slot
// it gives back is its own again.
func TestOneSourceCannotTakeEverySlot(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := netutil.LimitListener(limitPerSource(inner, 2), 4)
	defer ln.Close()
	accepted := acceptAll(ln)
	addr := inner.Addr().String()
	next := func(what string) net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			t.Cleanup(func() { c.Close() })
			return c
		case <-time.After(30 * time.Second):
			t.Fatalf("%s was not accepted", what)
			return nil
		}
	}
	hostile := []net.Conn{dialFrom(t, "127.0.0.2", addr), dialFrom(t, "127.0.0.2", addr)}
	held := []net.Conn{next("the first"), next("the second")}
	extra := dialFrom(t, "127.0.0.2", addr)
	if !closedByServer(extra, 30*time.Second) {
		t.Fatal("a third connection from the same address was kept")
	}
	dialFrom(t, "127.0.0.1", addr)
	if c := next("another address's connection"); sourceOf(c.RemoteAddr()) != "127.0.0.1" {
		t.Fatalf("accepted %v, want the connection from 127.0.0.1", c.RemoteAddr())
	}
	held[0].Close()
	held[0].Close() // twice gives back one slot
	hostile[0].Close()
	dialFrom(t, "127.0.0.2", addr)
	next("a connection in the slot given back")
	if extra := dialFrom(t, "127.0.0.2", addr); !closedByServer(extra, 30*time.Second) {
		t.Fatal("closing a connection twice gave back two slots")
	}
}

func TestMemoryLimitSizesTheKafkaBudgets(t *testing.T) {
	const mib = 1 << 20
	got := withMemoryLimit(Config{MemoryLimit: 512 * mib, KafkaDeploymentRequestMemory: 10 * mib})
	if got.KafkaFetchMemory != 128*mib || got.KafkaDeploymentFetchMemory != 128*mib {
		t.Errorf("fetch budgets %d, %d; want a quarter of the limit for both", got.KafkaFetchMemory, got.KafkaDeploymentFetchMemory)
	}
	if got.KafkaRequestMemory != 64*mib || got.KafkaDeploymentRequestMemory != 10*mib {
		t.Errorf("request budgets %d, %d; want an eighth of the limit and the operator's own", got.KafkaRequestMemory, got.KafkaDeploymentRequestMemory)
	}
	got = withMemoryLimit(Config{MemoryLimit: 8 << 30})
	if got.KafkaFetchMemory != 2<<30 || got.KafkaDeploymentFetchMemory != 256*mib {
		t.Errorf("fetch budgets %d, %d under a large limit; want 2 GiB and the deployment default", got.KafkaFetchMemory, got.KafkaDeploymentFetchMemory)
	}
	if got := withMemoryLimit(Config{}); got.KafkaFetchMemory != 0 || got.KafkaRequestMemory != 0 {
		t.Errorf("without a limit the budgets were set: %d, %d", got.KafkaFetchMemory, got.KafkaRequestMemory)
	}
}

// countingListener counts the connections accepted from the socket.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.accepted.Add(1)
	}
	return c, err
}

// An address at its cap that redials in a tight loop has its refused
// connections held, within the holder's budget, so the listener accepts a
// few of them instead of one per round trip; another address is served at
// once meanwhile.
func TestRedialingARefusedSourceIsHeld(t *testing.T) {
	// Held, each redialer waits a second (its own deadline) per refusal.
	testRedialing(t, 64, false, 10)
}

// Past the holder's budget a refused source is shut out at the socket:
// redialling, it reaches the listener a few times (one held, the next
// closed and its source shut out, the dials then time out unaccepted), not
// hundreds, while another address is still served.
func TestRedialingASourcePastTheHoldBudgetIsShutOut(t *testing.T) {
	testRedialing(t, 1, true, 2)
}

// testRedialing has redialers from 127.0.0.2 hammer a listener that lets an
// address have one connection, holding refused ones up to holdCap (and
// shutting out their source past it with a gate), and checks that each
// redialer was accepted at most perRedialer times in the window (closed at
// once, hundreds of times) and that 127.0.0.1 was served meanwhile.
func testRedialing(t *testing.T, holdCap int, gate bool, perRedialer int) {
	const redialers = 4
	inner, err := connhold.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counted := &countingListener{Listener: inner}
	ps := limitPerSource(counted, 1)
	ps.hold, ps.gate = connhold.New(holdCap, 5*time.Second), nil
	if gate {
		if ps.gate = connhold.NewGate(inner, 5*time.Second); ps.gate == nil {
			t.Fatal("no gate on the listener's socket")
		}
	}
	ln := netutil.LimitListener(ps, 4)
	defer ln.Close()
	accepted := acceptAll(ln)
	addr := inner.Addr().String()
	dialFrom(t, "127.0.0.2", addr) // takes the address's one slot
	slot := <-accepted
	defer slot.Close()

	wg := redial(addr, "127.0.0.2", redialers, 3*time.Second) // the window; nothing is timed
	dialFrom(t, "127.0.0.1", addr)
	select {
	case c := <-accepted:
		defer c.Close()
		if sourceOf(c.RemoteAddr()) != "127.0.0.1" {
			t.Fatalf("accepted %v, want the connection from 127.0.0.1", c.RemoteAddr())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("another address's connection was not accepted")
	}
	wg.Wait()
	if got := counted.accepted.Load(); got > int64(2+perRedialer*redialers) {
		t.Fatalf("the listener accepted %d connections from %d redialers; want the refused ones held or shut out", got, redialers)
	}
	if s := ps.hold.Stats(); s.Holding > holdCap {
		t.Fatalf("%d connections held, over the cap of %d", s.Holding, holdCap)
	}
	if s := ps.gate.Stats(); gate && s.ShutTotal == 0 {
		t.Fatalf("gate %+v: the source was never shut out", s)
	}
}

// redial has n clients from src dial addr over and over for window, each
// waiting up to a second for the server to close what it accepted.
func redial(addr, src string, n int, window time.Duration) *sync.WaitGroup {
	ctx, cancel := context.WithTimeout(context.Background(), window)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			for ctx.Err() == nil {
				if c, err := d.DialContext(ctx, "tcp", addr); err == nil {
					closedByServer(c, time.Second)
					c.Close()
				}
			}
		})
	}
	go func() { wg.Wait(); cancel() }()
	return &wg
}
