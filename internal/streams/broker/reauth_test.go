package broker

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// grants is an Authenticator whose answers a test changes, as IAM's change
// when credentials are deleted or a role is lowered.
type grants struct {
	mu     sync.Mutex
	access map[string]Access
	down   bool // IAM cannot be reached
}

func newGrants() *grants {
	return &grants{access: map[string]Access{managerKey: Manager, writerKey: Writer, readerKey: Reader}}
}

func (g *grants) set(key string, a Access) { g.mu.Lock(); defer g.mu.Unlock(); g.access[key] = a }
func (g *grants) setDown(down bool)        { g.mu.Lock(); defer g.mu.Unlock(); g.down = down }

func (g *grants) authenticate(_ context.Context, user, password string) (Access, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.down {
		return NoAccess, Temporary("the API key cannot be checked now; try again")
	}
	if a := g.access[password]; user == "token" && a != NoAccess {
		return a, nil
	}
	return NoAccess, errors.New("the API key is not valid")
}

// startReauthBroker serves a broker whose periodic sweep never comes during
// a test: the tests sweep when they choose.
func startReauthBroker(t *testing.T, g *grants) testBroker {
	return startBroker(t, nil, func(c *Config) { c.Authenticate, c.Reauthorize = g.authenticate, time.Hour })
}

// connsOf are the live connections logged in with key.
func (tb testBroker) connsOf(key string) []*conn {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var out []*conn
	for c := range tb.conns {
		if s := c.sess.Load(); s != nil && s.password == key {
			out = append(out, c)
		}
	}
	return out
}

func isClosed(c *conn) bool { return c.ctx.Err() != nil }

func TestReauthorizationFollowsTheAuthenticator(t *testing.T) {
	tests := []struct {
		name       string
		change     func(*grants)
		wantClosed bool
		wantAccess Access
	}{
		{"deleted credentials close the connection", func(g *grants) { g.set(writerKey, NoAccess) }, true, NoAccess},
		{"a lowered role applies to the live connection", func(g *grants) { g.set(writerKey, Reader) }, false, Reader},
		{"an unreachable IAM keeps the connection as it was", func(g *grants) { g.setDown(true) }, false, Writer},
		{"unchanged credentials keep their access", func(*grants) {}, false, Writer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := newGrants()
			tb := startReauthBroker(t, g)
			tb.mustCreate(t, "orders", 1)
			writer := tb.client(t, writerKey)
			reader := tb.client(t, readerKey)
			produceN(t, writer, "orders", 0, 1)
			if err := reader.Ping(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			conns, bystanders := tb.connsOf(writerKey), tb.connsOf(readerKey)
			if len(conns) == 0 || len(bystanders) == 0 {
				t.Fatal("no live connection to re-check")
			}

			tt.change(g)
			tb.reauthorize(t.Context())

			for _, c := range conns {
				if isClosed(c) != tt.wantClosed {
					t.Fatalf("connection closed: %v, want %v", isClosed(c), tt.wantClosed)
				}
				if got := c.access(); got != tt.wantAccess {
					t.Fatalf("access %v, want %v", got, tt.wantAccess)
				}
			}
			if slices.ContainsFunc(bystanders, isClosed) {
				t.Fatal("another login's connection was closed")
			}
		})
	}
}

func TestRevokedLoginCannotReconnect(t *testing.T) {
	g := newGrants()
	tb := startReauthBroker(t, g)
	tb.mustCreate(t, "orders", 1)
	cl := tb.client(t, writerKey)
	produceN(t, cl, "orders", 0, 1)

	g.set(writerKey, NoAccess)
	tb.reauthorize(t.Context())

	// The first request may meet the closed connection (EOF); the client
	// then reconnects, and that login is refused.
	waitFor(t, "the reconnection to be refused", func() bool {
		err := cl.Ping(testCtx(t))
		if err == nil {
			t.Fatal("the revoked login still works")
		}
		return errors.Is(err, kerr.SaslAuthenticationFailed)
	})
}

func TestLoweredRoleRefusesProduceButStillFetches(t *testing.T) {
	g := newGrants()
	tb := startReauthBroker(t, g)
	tb.mustCreate(t, "orders", 1)
	cl := tb.client(t, writerKey, kgo.DefaultProduceTopic("orders"), kgo.DisableIdempotentWrite(),
		kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	produceN(t, cl, "orders", 0, 3)
	before := tb.connsOf(writerKey)

	g.set(writerKey, Reader)
	tb.reauthorize(t.Context())

	err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("as reader")}).FirstErr()
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce after the role was lowered: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
	if got := consume(t, cl, 3); len(got) != 3 {
		t.Fatalf("fetched %d records, want 3", len(got))
	}
	if slices.ContainsFunc(before, isClosed) {
		t.Fatal("lowering the role closed the connection")
	}
}

func TestReauthorizeSweepsWithoutWaitingForTheInterval(t *testing.T) {
	g := newGrants()
	tb := startReauthBroker(t, g)
	cl := tb.client(t, writerKey)
	if err := cl.Ping(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	conns := tb.connsOf(writerKey)
	g.set(writerKey, NoAccess)
	tb.Reauthorize() // the interval is an hour: only the request can sweep
	waitFor(t, "the revoked connection to close", func() bool {
		return !slices.ContainsFunc(conns, func(c *conn) bool { return !isClosed(c) })
	})
}
