package server

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// startServer serves a Keyline on a fresh data directory until the test ends.
func startServer(t *testing.T, mod func(*Config)) *Server {
	t.Helper()
	cfg := Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", KafkaHost: "127.0.0.1"}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	return s
}

// sendRaw writes a partial request and reports how the server ends it:
// the first line of an answer, or "closed".
func sendRaw(t *testing.T, addr, request string) (string, time.Duration) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.SetReadDeadline(start.Add(20 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "held open", time.Since(start)
	}
	if err != nil {
		return "closed", time.Since(start)
	}
	return strings.TrimSpace(line), time.Since(start)
}

func TestSlowBodiesAreCutOff(t *testing.T) {
	s := startServer(t, func(c *Config) { c.HTTPBodyTimeout = 500 * time.Millisecond })
	head := "POST /api/v2/keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer x\r\nBluemix-Instance: x\r\n"
	for name, req := range map[string]string{
		"dribbled body":          head + "Content-Length: 100\r\n\r\n{",
		"chunk never sent":       head + "Transfer-Encoding: chunked\r\n\r\n7fffffffffff\r\n",
		"chunk header not ended": head + "Transfer-Encoding: chunked\r\n\r\n7fff",
	} {
		t.Run(name, func(t *testing.T) {
			got, took := sendRaw(t, s.Addr(), req)
			if got == "held open" {
				t.Fatalf("the connection was held open for %v", took)
			}
			t.Logf("%s after %v", got, took)
		})
	}
}

func TestHTTPConnectionsAreCapped(t *testing.T) {
	s := startServer(t, func(c *Config) { c.HTTPMaxConnections = 2 })
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n") // headers never ended
		held = append(held, c)
	}
	answered := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + s.Addr() + "/healthz")
		if err != nil {
			answered <- 0
			return
		}
		resp.Body.Close()
		answered <- resp.StatusCode
	}()
	select {
	case st := <-answered:
		t.Fatalf("a third connection was served (%d) while the cap of 2 was held", st)
	case <-time.After(time.Second):
	}
	held[0].Close()
	select {
	case st := <-answered:
		if st != 200 {
			t.Fatalf("healthz = %d", st)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the waiting connection was not served once a slot freed")
	}
	held[1].Close()
}
