package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// recorder collects what a feed hands its subscribers.
type recorder struct {
	mu     sync.Mutex
	keys   []string
	resets int
}

func (r *recorder) got() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.keys...), r.resets
}

func follow(t *testing.T, db *store.DB) (*cluster.Feed, *recorder) {
	t.Helper()
	f, err := cluster.NewFeed(context.Background(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	f.Subscribe("test.topic", func(key string) { r.mu.Lock(); r.keys = append(r.keys, key); r.mu.Unlock() })
	f.OnReset(func() { r.mu.Lock(); r.resets++; r.mu.Unlock() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f.Start(ctx)
	return f, r
}

func change(t *testing.T, db *store.DB, key string) {
	t.Helper()
	if err := db.Tx(context.Background(), func(tx *store.Tx) error { tx.Changed("test.topic", key); return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestFeedDeliversOtherNodesChangesAndDistrustsAGap runs a feed on one
// node: another node's change reaches its subscriber, its own does not
// (its commit hooks applied it); when the changes table cannot be read the
// feed stops being trusted within about a second, and once it can be read
// again it resets every cache rather than trusting what it may have missed.
func TestFeedDeliversOtherNodesChangesAndDistrustsAGap(t *testing.T) {
	url := storetest.URL(t)
	if url == "" {
		t.Skip("the change feed is PostgreSQL's")
	}
	dir := t.TempDir()
	a := storetest.OpenAt(t, dir, url)
	b := storetest.OpenAt(t, dir, url)
	f, r := follow(t, b)
	if !f.Trusted() {
		t.Fatal("a new feed is not trusted")
	}
	change(t, b, "own")
	change(t, a, "theirs")
	waitUntil(t, "the other node's change", func() bool { keys, _ := r.got(); return len(keys) > 0 })
	if keys, _ := r.got(); len(keys) != 1 || keys[0] != "theirs" {
		t.Fatalf("subscriber got %v, want only [theirs]", keys)
	}

	// The feed's table disappears from under it: it can no longer read.
	ctx := context.Background()
	if err := a.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`ALTER TABLE keyline_changes RENAME TO keyline_changes_away`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the feed to stop being trusted", func() bool { return !f.Trusted() })
	if st := f.Status(); st.Trusted || !st.Shared {
		t.Fatalf("status while the feed cannot be read: %+v", st)
	}
	if err := a.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`ALTER TABLE keyline_changes_away RENAME TO keyline_changes`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the feed to be trusted again", f.Trusted)
	if _, resets := r.got(); resets != 1 {
		t.Fatalf("%d resets after the gap, want 1", resets)
	}
}

// TestFeedOnSQLiteIsAlwaysTrusted: one process, nothing to follow.
func TestFeedOnSQLiteIsAlwaysTrusted(t *testing.T) {
	db := storetest.OpenAt(t, t.TempDir(), "")
	f, r := follow(t, db)
	change(t, db, "x")
	if !f.Trusted() || f.Status().Shared {
		t.Fatalf("a SQLite feed: trusted=%v status=%+v", f.Trusted(), f.Status())
	}
	if keys, resets := r.got(); len(keys) != 0 || resets != 0 {
		t.Fatalf("a SQLite feed called its subscribers: %v, %d resets", keys, resets)
	}
}
