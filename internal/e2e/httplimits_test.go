package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/server"
	"github.com/keyline/keyline/internal/tlstest"
)

// limited starts a Keyline with short HTTP limits.
func limited(t *testing.T, maxConns int, opts ...func(*server.Config)) *env {
	t.Helper()
	return startIn(t, t.TempDir(), nil, append([]func(*server.Config){func(c *server.Config) {
		c.Clock = nil // the real clock: deadlines are the network's
		c.RequestBodyTimeout = time.Second
		c.WriteTimeout = time.Second
		c.MaxConnections = maxConns
	}}, opts...)...)
}

// closedBy reads conn until the server closes it and fails the test when
// that has not happened by the deadline.
func closedBy(t *testing.T, conn net.Conn, deadline time.Duration) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(deadline))
	_, err := io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server still holds the connection after %v", deadline)
	}
}

func dial(t *testing.T, e *env) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", e.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func TestSlowBodyIsCutAtTheBodyTimeout(t *testing.T) {
	e := limited(t, 0)
	token, err := e.admin.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, head, body string
		drip             bool
	}{
		{"dripping body", "Content-Length: 100000\r\n", `{"resources":[`, true},
		{"huge chunk never sent", "Transfer-Encoding: chunked\r\n", "FFFFFFFF\r\n", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := dial(t, e)
			_, err := io.WriteString(conn, "POST /api/v2/keys HTTP/1.1\r\nHost: keyline\r\nAuthorization: Bearer "+token+
				"\r\nBluemix-Instance: 00000000-0000-0000-0000-000000000000\r\nContent-Type: application/json\r\n"+tc.head+"\r\n"+tc.body)
			if err != nil {
				t.Fatal(err)
			}
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				if !tc.drip {
					return
				} // a byte now and then, well within any idle timeout
				for {
					select {
					case <-stop:
						return
					case <-time.After(100 * time.Millisecond):
						if _, err := conn.Write([]byte(" ")); err != nil {
							return
						}
					}
				}
			}()
			closedBy(t, conn, 30*time.Second)
		})
	}
}

func TestConnectionsBeyondTheCapWait(t *testing.T) {
	const cap = 3
	e := limited(t, cap)
	var held []net.Conn
	for range cap {
		held = append(held, dial(t, e))
	}
	answered := make(chan error, 1)
	go func() {
		resp, err := http.Get(e.url + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		answered <- err
	}()
	select {
	case err := <-answered:
		t.Fatalf("a connection beyond the cap of %d was served (err %v)", cap, err)
	case <-time.After(time.Second):
	}
	held[0].Close()
	select {
	case err := <-answered:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("a freed connection slot was not used")
	}
}

func TestSlowBodiesDoNotStarveOthersAtTheCap(t *testing.T) {
	const cap = 3
	e := limited(t, cap)
	for range cap {
		conn := dial(t, e)
		io.WriteString(conn, "POST /api/v2/keys HTTP/1.1\r\nHost: keyline\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	}
	hc := &http.Client{Timeout: 60 * time.Second}
	resp, err := hc.Get(e.url + "/healthz")
	if err != nil {
		t.Fatalf("a request behind %d slow bodies: %v", cap, err)
	}
	resp.Body.Close()
}

// An event stream runs past the body and write timeouts, over HTTP/1.1 and
// over HTTP/2 (with TLS): they bound a request's body and each write, not a
// response's life.
func TestFollowOutlivesTheTimeouts(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http/1.1", true: "http/2"}[h2], func(t *testing.T) {
			var opts []func(*server.Config)
			transport := &http.Transport{}
			if h2 {
				pair := tlstest.Issue(t, t.TempDir(), "keyline", "127.0.0.1", "localhost")
				opts = append(opts, func(c *server.Config) { c.TLSCertFile, c.TLSKeyFile = pair.CertFile, pair.KeyFile })
				transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pair.Pool()}, ForceAttemptHTTP2: true}
			}
			e := limited(t, 0, opts...)
			e.admin.HTTP.Transport = transport
			token, err := e.admin.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", e.url+"/v1/audit/events?follow=true", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := (&http.Client{Transport: transport}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || (resp.ProtoMajor == 2) != h2 {
				t.Fatalf("follow: %s over %s", resp.Status, resp.Proto)
			}
			lines := make(chan string)
			go func() {
				sc := bufio.NewScanner(resp.Body)
				sc.Buffer(nil, 1<<20)
				for sc.Scan() {
					lines <- sc.Text()
				}
				close(lines)
			}()
			time.Sleep(3 * time.Second) // three times either timeout, with the stream idle
			e.as(e.admin).createInstance("kp-after-the-timeout", "kms", "tiered-pricing", "us-south", nil)
			deadline := time.After(60 * time.Second)
			for {
				select {
				case l, ok := <-lines:
					if !ok {
						t.Fatal("the stream ended")
					}
					if strings.Contains(l, "kp-after-the-timeout") {
						return
					}
				case <-deadline:
					t.Fatal("no event for the instance created after the timeouts")
				}
			}
		})
	}
}
