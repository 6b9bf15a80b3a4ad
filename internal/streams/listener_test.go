package streams

import (
	"log/slog"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// exhaustedListener fails every accept with EMFILE while exhausted is set.
type exhaustedListener struct {
	net.Listener
	exhausted atomic.Bool
}

func (l *exhaustedListener) Accept() (net.Conn, error) {
	if l.exhausted.Load() {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

func TestDeploymentListenerReportsAndOutlivesDescriptorExhaustion(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	el := &exhaustedListener{Listener: ln}
	el.exhausted.Store(true)
	f := newFront(el, slog.New(slog.DiscardHandler))
	defer f.close()
	h := newHandoff(ln.Addr())
	f.attach(h)
	deadline := time.Now().Add(20 * time.Second)
	for f.health().Healthy || f.health().AcceptErrors < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("health while accepts fail: %+v", f.health())
		}
		time.Sleep(10 * time.Millisecond)
	}
	el.exhausted.Store(false)
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got := make(chan net.Conn, 1)
	go func() {
		if c, err := h.Accept(); err == nil {
			got <- c
		}
	}()
	select {
	case sc := <-got:
		sc.Close()
	case <-time.After(20 * time.Second):
		t.Fatal("the listener never handed over a connection after the descriptors came back")
	}
	if !f.health().Healthy {
		t.Fatalf("health after recovery: %+v", f.health())
	}
}
