package broker

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/connhold"
)

// hostileAddr is a second loopback address: strangers come from there and
// the legitimate client from 127.0.0.1, so the per-address cap applies to
// them only.
var hostileAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}

// partialFrames opens n connections from hostileAddr that each send the
// first bytes of a frame's size and nothing more.
func partialFrames(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	return partialFramesFrom(t, addr, n, func(int) net.IP { return hostileAddr.IP })
}

// partialFramesFrom is partialFrames with connection i from src(i).
func partialFramesFrom(t *testing.T, addr string, n int, src func(int) net.IP) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for i := range n {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src(i)}, Timeout: 10 * time.Second}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", src(i), err)
		}
		t.Cleanup(func() { c.Close() })
		c.Write([]byte{0, 0}) // fails once the broker closed it: that is fine
		conns = append(conns, c)
	}
	return conns
}

// closedByServer reports, for each connection, whether the broker closed it
// within wait.
func closedByServer(conns []net.Conn, wait time.Duration) []bool {
	closed := make([]bool, len(conns))
	var wg sync.WaitGroup
	for i, c := range conns {
		wg.Go(func() {
			c.SetReadDeadline(time.Now().Add(wait))
			_, err := c.Read(make([]byte, 1))
			var ne net.Error
			closed[i] = err != nil && !(errors.As(err, &ne) && ne.Timeout())
		})
	}
	wg.Wait()
	return closed
}

func TestStrangersAtTheirCapDoNotStarveALoggedInProducer(t *testing.T) {
	const perIP, hostile = 10, 60 // more strangers than MaxConnections
	tb := startBroker(t, nil, func(c *Config) {
		c.MaxConnections, c.MaxPreAuthConnections, c.MaxPreAuthPerIP = 40, 30, perIP
		c.LoginTimeout = time.Minute                          // the strangers keep their slots all through the test
		c.Holder = connhold.New(hostile, 10*time.Millisecond) // refusals, not holds, are tested here
	})
	tb.mustCreate(t, "orders", 1)
	conns := partialFrames(t, tb.Addr().String(), hostile)
	waitFor(t, "the broker to settle its strangers", func() bool {
		return tb.Connections() == ConnectionCounts{Open: perIP, PreAuth: perIP}
	})
	closed := 0
	for _, c := range closedByServer(conns, 3*time.Second) {
		if c {
			closed++
		}
	}
	if closed != hostile-perIP {
		t.Fatalf("the broker closed %d of %d strangers' connections, want all but the %d its cap allows", closed, hostile, perIP)
	}

	start := time.Now()
	prod := tb.client(t, writerKey, kgo.DefaultProduceTopic("orders"))
	for i := range 4 {
		if err := prod.ProduceSync(testCtx(t), &kgo.Record{Value: []byte{byte(i)}}).FirstErr(); err != nil {
			t.Fatalf("produce while strangers sit at their cap: %v", err)
		}
	}
	cons := tb.client(t, readerKey, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	consume(t, cons, 4)
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("producing and consuming 4 records took %v while strangers held their slots", took)
	}
	if got := tb.Connections().PreAuth; got != perIP {
		t.Fatalf("%d connections not logged in, want the strangers' %d", got, perIP)
	}
}

func TestLoginTimeoutClosesAStranger(t *testing.T) {
	tb := startBroker(t, nil, func(c *Config) { c.LoginTimeout = time.Second })
	c := partialFrames(t, tb.Addr().String(), 1)[0]
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("a connection that never logs in was not closed: %v after %v", err, time.Since(start))
	}
	waitFor(t, "the stranger's slot to be given back", func() bool { return tb.Connections() == ConnectionCounts{} })
}

func TestFloodOfBadConnectionsLogsASummary(t *testing.T) {
	var mu sync.Mutex
	var buf bytes.Buffer
	tb := startBroker(t, nil, func(c *Config) {
		c.MaxPreAuthPerIP = 5
		c.Logger = slog.New(slog.NewTextHandler(lockedWriter{&mu, &buf}, nil))
	})
	d := net.Dialer{LocalAddr: hostileAddr}
	const flood = 300
	for range flood {
		c, err := d.Dial("tcp", tb.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte{0x7f, 0xff, 0xff, 0xff}) // a frame far over the limit
		c.Close()
	}
	waitFor(t, "the flood to end", func() bool { return tb.Connections() == ConnectionCounts{} })
	mu.Lock()
	out := buf.String()
	mu.Unlock()
	if n := strings.Count(out, "\n"); n > 6 {
		t.Fatalf("%d log lines for %d bad connections:\n%s", n, flood, out)
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// redial connects from hostileAddr over and over until ctx ends, each time
// waiting (up to a second) for the broker to close the connection, as a
// client that reconnects at once does.
func redial(ctx context.Context, addr string) {
	d := net.Dialer{LocalAddr: hostileAddr, Timeout: 10 * time.Second}
	for ctx.Err() == nil {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			continue
		}
		c.SetReadDeadline(time.Now().Add(time.Second))
		io.Copy(io.Discard, c)
		c.Close()
	}
}

// An address over its cap of strangers that redials in a tight loop gets
// its refused connections held, not closed at once, so the broker accepts a
// handful of them instead of one per round trip; a client from another
// address meanwhile logs in and produces.
func TestRedialingARefusedAddressIsHeld(t *testing.T) {
	const redialers = 4
	tb := startBroker(t, nil, func(c *Config) {
		c.MaxPreAuthPerIP = 1
		c.LoginTimeout = time.Minute
		c.Holder = connhold.New(64, 5*time.Second)
	})
	tb.mustCreate(t, "orders", 1)
	partialFrames(t, tb.Addr().String(), 1) // takes the address's one slot
	waitFor(t, "the stranger's slot", func() bool { return tb.Connections().PreAuth == 1 })

	// The redialers' window; nothing is timed.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range redialers {
		wg.Go(func() { redial(ctx, tb.Addr().String()) })
	}
	waitFor(t, "a refusal", func() bool { return tb.Admissions().Refused > 0 })
	prod := tb.client(t, writerKey, kgo.DefaultProduceTopic("orders"))
	if err := prod.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("a client from another address could not produce: %v", err)
	}
	wg.Wait()

	// Each redialer waits a second (its own deadline) per refusal when it
	// is held, so over the window it is refused about three times; closed
	// at once, it is refused hundreds of times.
	if got := tb.Admissions().Refused; got > 10*redialers {
		t.Fatalf("the broker accepted and refused %d connections of %d redialers; want them held, a few refusals each", got, redialers)
	}
}

// However many connections are refused at once, no more than the holder's
// cap are held (each costs a descriptor); the rest are closed at once.
func TestHeldConnectionsStayWithinTheirCap(t *testing.T) {
	const held, refused = 3, 20
	hold := connhold.New(held, time.Minute)
	tb := startBroker(t, nil, func(c *Config) {
		c.MaxPreAuthConnections, c.MaxPreAuthPerIP = 1, 1
		c.LoginTimeout = time.Minute
		c.Holder = hold
	})
	// Each from an address of its own: one refused past the holder's cap
	// has its address shut out (TestRefusalPastTheHoldBudgetShutsTheSourceOut),
	// and the total cap refuses them all the same.
	conns := partialFramesFrom(t, tb.Addr().String(), 1+refused, func(i int) net.IP { return net.IPv4(127, 0, 1, byte(1+i)) })
	waitFor(t, "every connection to be refused", func() bool {
		if s := hold.Stats(); s.Holding > held {
			t.Fatalf("%d connections held, over the cap of %d", s.Holding, held)
		}
		return tb.Admissions().Refused == refused
	})
	if s := hold.Stats(); s.Holding != held || s.ClosedAtOnce != refused-held {
		t.Fatalf("holder stats %+v; want %d held and %d closed at once", s, held, refused-held)
	}
	open := 0
	for _, closed := range closedByServer(conns[1:], 3*time.Second) {
		if !closed {
			open++
		}
	}
	if open != held {
		t.Fatalf("%d refused connections still open, want the %d held", open, held)
	}
}

// An address opening connections faster than its rate has those over its
// burst throttled (held, then closed) while another address is served.
func TestConnectionRatePerIPThrottlesOneAddress(t *testing.T) {
	const burst, dials = 5, 30
	tb := startBroker(t, nil, func(c *Config) {
		c.ConnectionRatePerIP, c.ConnectionBurstPerIP = 1, burst
		c.Holder = connhold.New(64, 100*time.Millisecond)
	})
	start := time.Now()
	d := net.Dialer{LocalAddr: hostileAddr, Timeout: 10 * time.Second}
	for range dials {
		c, err := d.Dial("tcp", tb.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	waitFor(t, "every connection to be admitted or refused", func() bool {
		a := tb.Admissions()
		return a.Served+a.Refused == dials
	})
	// The bucket refills at one a second: however slowly the dials went,
	// the rest of them were throttled.
	allowed := burst + int(time.Since(start).Seconds()) + 1
	if got := tb.Admissions(); got.Throttled < uint64(dials-allowed) {
		t.Fatalf("admissions %+v after %d quick dials; want at most %d served", got, dials, allowed)
	}
	cl := tb.client(t, writerKey)
	if err := cl.Ping(testCtx(t)); err != nil {
		t.Fatalf("a client from another address was not served: %v", err)
	}
}

// A refusal past the holder's budget is closed and its source shut out at
// the socket: its next connection attempts are dropped before any accept
// (the dial times out instead of being accepted and closed), while clients
// from other addresses are served.
func TestRefusalPastTheHoldBudgetShutsTheSourceOut(t *testing.T) {
	tb := startBroker(t, nil, func(c *Config) {
		c.MaxPreAuthPerIP = 1
		c.LoginTimeout = time.Minute
		c.Holder = connhold.New(1, time.Minute)
	})
	tb.mustCreate(t, "orders", 1)
	partialFrames(t, tb.Addr().String(), 3) // the slot, one held, one closed
	waitFor(t, "two refusals", func() bool { return tb.Admissions().Refused == 2 })
	d := net.Dialer{LocalAddr: hostileAddr, Timeout: time.Second}
	if c, err := d.Dial("tcp", tb.Addr().String()); err == nil {
		c.Close()
		t.Fatal("the source refused past the holder's budget connected again")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("dial from the shut-out source: %v, want a timeout (its SYN dropped)", err)
	}
	if got := tb.Admissions().Refused; got != 2 {
		t.Fatalf("%d refusals; the shut-out source's dial reached the broker", got)
	}
	prod := tb.client(t, writerKey, kgo.DefaultProduceTopic("orders"))
	if err := prod.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
		t.Fatalf("a client from another address could not produce: %v", err)
	}
}
