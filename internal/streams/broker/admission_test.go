package broker

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// hostileAddr is a second loopback address: strangers come from there and
// the legitimate client from 127.0.0.1, so the per-address cap applies to
// them only.
var hostileAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}

// partialFrames opens n connections from hostileAddr that each send the
// first bytes of a frame's size and nothing more.
func partialFrames(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: hostileAddr, Timeout: 10 * time.Second}
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial from %s: %v", hostileAddr, err)
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
		c.LoginTimeout = time.Minute // the strangers keep their slots all through the test
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
