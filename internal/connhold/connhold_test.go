package connhold

import (
	"io"
	"net"
	"testing"
	"time"
)

// A held connection is closed after the delay, unread; past the cap one is
// closed at once.
func TestHoldsUpToItsCapThenClosesAtOnce(t *testing.T) {
	h := New(2, 200*time.Millisecond)
	var clients []net.Conn
	for range 3 {
		server, client := net.Pipe()
		t.Cleanup(func() { client.Close() })
		clients = append(clients, client)
		h.Hold(server)
	}
	if s := h.Stats(); s.Holding != 2 || s.ClosedAtOnce != 1 {
		t.Fatalf("stats %+v; want 2 held and 1 closed at once", s)
	}
	for i, c := range clients {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("connection %d: %v, want it closed", i, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for h.Stats().Holding != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if s := h.Stats(); s != (Stats{Max: 2, Held: 2, ClosedAtOnce: 1}) {
		t.Fatalf("stats %+v after the delay; want the 2 held closed", s)
	}
}

func TestBudgetIsAQuarterOfTheDescriptors(t *testing.T) {
	for nofile, want := range map[uint64]int{0: 256, 1024: 256, 1 << 20: 1 << 16, 8: 2} {
		if got := budget(nofile); got != want {
			t.Errorf("budget(%d) = %d, want %d", nofile, got, want)
		}
	}
}
