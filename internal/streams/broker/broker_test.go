package broker

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/keyline/keyline/internal/connhold"
)

// Test credentials: the user is always "token", the password an API key.
const (
	managerKey = "manager-api-key"
	writerKey  = "writer-api-key"
	readerKey  = "reader-api-key"
)

func testAuthenticate(_ context.Context, user, password string) (Access, error) {
	if user != "token" {
		return NoAccess, errors.New("the user name must be token")
	}
	switch password {
	case managerKey:
		return Manager, nil
	case writerKey:
		return Writer, nil
	case readerKey:
		return Reader, nil
	}
	return NoAccess, errors.New("the API key is not valid")
}

type testBroker struct {
	*Broker
	store *memStore
}

// startBroker serves a broker on 127.0.0.1:0 until the test ends.
func startBroker(t testing.TB, store *memStore, mod ...func(*Config)) testBroker {
	t.Helper()
	if store == nil {
		store = newMemStore()
	}
	ln, err := connhold.Listen("tcp", "127.0.0.1:0") // as the server binds it: a socket that takes a gate
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{NodeID: 1, Listener: ln, Storage: store, Authenticate: testAuthenticate}
	if os.Getenv("BROKER_DEBUG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for _, m := range mod {
		m(&cfg)
	}
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { defer close(served); b.Serve(context.Background()) }()
	t.Cleanup(func() { b.Close(); <-served })
	return testBroker{b, store}
}

// client is a franz-go client logged in with key.
func (tb testBroker) client(t testing.TB, key string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts = append([]kgo.Opt{
		kgo.SeedBrokers(tb.Addr().String()),
		kgo.SASL(plain.Auth{User: "token", Pass: key}.AsMechanism()),
		kgo.RetryTimeout(5 * time.Second),
		// A fetch for partitions without new data waits this long before
		// partitions added meanwhile are fetched; keep tests quick.
		kgo.FetchMaxWait(500 * time.Millisecond),
	}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func (tb testBroker) admin(t testing.TB, key string) *kadm.Client {
	return kadm.NewClient(tb.client(t, key))
}

func (tb testBroker) mustCreate(t testing.TB, name string, partitions int32) {
	t.Helper()
	if _, err := tb.CreateTopic(context.Background(), name, partitions, nil); err != nil {
		t.Fatal(err)
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustUUID(t testing.TB, s string) []byte {
	t.Helper()
	id, err := uuid.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return id[:]
}

func kadmOffsets(topic string, partition int32, at int64) kadm.Offsets {
	os := kadm.Offsets{}
	os.Add(kadm.Offset{Topic: topic, Partition: partition, At: at})
	return os
}
