package streams

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/streams/broker"
)

func TestDeploymentShowsItsKafkaListener(t *testing.T) {
	h := newHarness(t)
	h.configure = func(c *Config) { c.MaxPreAuthPerIP = 2 }
	h.restart()
	inst, _ := h.provisionWithKey()
	info, err := h.svc.Deployment(context.Background(), inst.GUID)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 { // strangers that never log in, over the cap of 2
		c, err := net.Dial("tcp", info.KafkaBrokers[0])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	eventually(t, "the deployment to show its strangers at their cap", func() bool {
		info, err = h.svc.Deployment(context.Background(), inst.GUID)
		return err == nil && info.KafkaConnections != nil && *info.KafkaConnections == broker.ConnectionCounts{Open: 2, PreAuth: 2}
	})
	if l := info.KafkaListener; l == nil || !l.Healthy || l.AcceptErrors != 0 {
		t.Fatalf("listener health %+v, want healthy", l)
	}
}

// A connection accepted before any broker is attached (the socket is bound
// and published just before the first broker starts, and a swap of brokers
// leaves a moment with none) waits for the next broker rather than being
// closed, which franz-go does not retry during ApiVersions.
func TestConnectionWaitsForTheFirstBroker(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := newFront(ln, slog.New(slog.DiscardHandler))
	defer f.close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Let the front accept it with no broker attached.
	time.Sleep(200 * time.Millisecond)
	h := newHandoff(ln.Addr(), nil)
	defer h.Close()
	f.attach(h)
	got := make(chan net.Conn, 1)
	go func() {
		if sc, err := h.Accept(); err == nil {
			got <- sc
		}
	}()
	select {
	case sc := <-got:
		defer sc.Close()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		sc.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("the handed-over connection read %q, %v", buf, err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the connection accepted before the broker attached was never handed to it")
	}
}
