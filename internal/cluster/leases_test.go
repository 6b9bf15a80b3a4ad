package cluster

import (
	"context"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

func join(t *testing.T, db *store.DB, id string) (*Membership, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	m, err := Join(ctx, db, id, "http://"+id, func() bool { return false }, func() bool { return true }, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m, cancel
}

// guardedWrite commits one row under l's guard, as work under the lease does.
func guardedWrite(l *Lease, db *store.DB) error {
	return db.Tx(store.WithGuard(context.Background(), l.Guard), func(tx *store.Tx) error {
		_, err := tx.Exec(`UPDATE cluster_nodes SET url = url WHERE node_id = ?`, l.m.id)
		return err
	})
}

// TestLeaseHasOneHolderAndFencesTheStaleOne: two processes on one database
// want the lease; one holds it, the other does not take it while it is
// renewed; when the holder stops renewing (killed), the other takes it
// with a new fencing number after LeaseTTL, and a write of the old holder,
// who still believes it holds the lease, is refused in its transaction.
func TestLeaseHasOneHolderAndFencesTheStaleOne(t *testing.T) {
	url := storetest.URL(t)
	if url == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set: leases only matter on PostgreSQL")
	}
	ctx := context.Background()
	dbA, dbB := storetest.OpenAt(t, t.TempDir(), url), storetest.OpenAt(t, t.TempDir(), url)
	a, _ := join(t, dbA, "node-a")
	b, _ := join(t, dbB, "node-b")
	la, lb := a.Lease(SchedulersLease), b.Lease(SchedulersLease)
	if held, err := la.renew(ctx); err != nil || !held {
		t.Fatalf("node a: held %v, %v", held, err)
	}
	if la.Fence() != 1 {
		t.Fatalf("first fence %d", la.Fence())
	}
	if held, err := lb.renew(ctx); err != nil || held {
		t.Fatalf("node b took a held lease: %v, %v", held, err)
	}
	if err := guardedWrite(la, dbA); err != nil {
		t.Fatalf("the holder's write: %v", err)
	}
	if err := guardedWrite(lb, dbB); errs.KindOf(err) != errs.Conflict {
		t.Fatalf("a write of a node without the lease: %v", err)
	}
	nodes, err := b.Live(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if want := n.ID == "node-a"; (len(n.Leases) == 1 && n.Leases[0] == SchedulersLease) != want {
			t.Errorf("node %s lists leases %v", n.ID, n.Leases)
		}
	}
	// Node a stops renewing, as if killed; node b keeps trying.
	start := time.Now()
	for {
		held, err := lb.renew(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if held {
			break
		}
		if time.Since(start) > LeaseTTL+5*time.Second {
			t.Fatal("node b never took the lapsed lease")
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("taken over after %v", time.Since(start).Round(time.Millisecond))
	if lb.Fence() != 2 {
		t.Errorf("fence after a change of holder: %d", lb.Fence())
	}
	// Node a, paused rather than dead, still believes it holds the lease.
	la.mu.Lock()
	la.until = time.Now().Add(time.Minute)
	la.mu.Unlock()
	if err := guardedWrite(la, dbA); errs.KindOf(err) != errs.Conflict {
		t.Fatalf("the stale holder's write: %v", err)
	}
	if err := guardedWrite(lb, dbB); err != nil {
		t.Fatalf("the new holder's write: %v", err)
	}
	// Its renewal does not take the lease back either.
	if held, err := la.renew(ctx); err != nil || held {
		t.Fatalf("the stale holder renewed: %v, %v", held, err)
	}
	// A clean stop releases the lease: the other takes it at once.
	lb.release(ctx)
	if held, err := la.renew(ctx); err != nil || !held || la.Fence() != 3 {
		t.Fatalf("after a release: held %v fence %d, %v", held, la.Fence(), err)
	}
}

// TestLeaseRunStartsWorkOnlyOnTheHolder runs the work of two processes
// under one lease: only one runs it.
func TestLeaseRunStartsWorkOnlyOnTheHolder(t *testing.T) {
	url := storetest.URL(t)
	if url == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set: leases only matter on PostgreSQL")
	}
	dbA, dbB := storetest.OpenAt(t, t.TempDir(), url), storetest.OpenAt(t, t.TempDir(), url)
	a, _ := join(t, dbA, "node-a")
	b, _ := join(t, dbB, "node-b")
	started := make(chan string, 4)
	run := func(m *Membership) context.CancelFunc {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			m.Lease(SchedulersLease).Run(ctx, func(ctx context.Context) error {
				started <- m.id
				<-ctx.Done()
				return nil
			})
		}()
		return func() { cancel(); <-done }
	}
	stopA := run(a)
	first := <-started
	if first != "node-a" {
		t.Fatalf("first holder %s", first)
	}
	stopB := run(b)
	defer stopB()
	select {
	case id := <-started:
		t.Fatalf("%s started the work while node-a holds the lease", id)
	case <-time.After(3 * LeaseRenew):
	}
	stopA() // a clean stop releases it
	select {
	case id := <-started:
		if id != "node-b" {
			t.Fatalf("next holder %s", id)
		}
	case <-time.After(LeaseTTL + 5*time.Second):
		t.Fatal("node-b never started the work after node-a stopped")
	}
}

// TestLeaseWithItsOwnTimingsAndDeferral: a lease with a short lifetime
// lapses after it, not after LeaseTTL; a node whose Defer says "not
// yet" leaves the lapsed lease to one that takes it at once, and Holder
// names each holder in turn.
func TestLeaseWithItsOwnTimingsAndDeferral(t *testing.T) {
	url := storetest.URL(t)
	if url == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set: leases only matter on PostgreSQL")
	}
	ctx := context.Background()
	dbs := []*store.DB{storetest.OpenAt(t, t.TempDir(), url), storetest.OpenAt(t, t.TempDir(), url), storetest.OpenAt(t, t.TempDir(), url)}
	a, _ := join(t, dbs[0], "node-a")
	b, _ := join(t, dbs[1], "node-b")
	c, _ := join(t, dbs[2], "node-c")
	var lastSeen []string
	opts := func(wait time.Duration) LeaseOptions {
		return LeaseOptions{Renew: 250 * time.Millisecond, TTL: 2 * time.Second, Defer: func(last string) time.Duration {
			lastSeen = append(lastSeen, last)
			return wait
		}}
	}
	la, lb, lc := a.LeaseWith("deployment/x", opts(0)), b.LeaseWith("deployment/x", opts(time.Hour)), c.LeaseWith("deployment/x", opts(0))
	if held, err := la.TryAcquire(ctx); err != nil || !held {
		t.Fatalf("node a: held %v, %v", held, err)
	}
	if h, err := b.Holder(ctx, "deployment/x"); err != nil || h != "node-a" {
		t.Fatalf("holder %q, %v", h, err)
	}
	// Node a stops renewing; the lease lapses after its own TTL.
	start := time.Now()
	for {
		h, err := b.Holder(ctx, "deployment/x")
		if err != nil {
			t.Fatal(err)
		}
		if h == "" {
			break
		}
		if time.Since(start) > LeaseTTL {
			t.Fatal("the lease did not lapse after its own TTL")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if held, err := lb.TryAcquire(ctx); err != nil || held {
		t.Fatalf("a deferring node took the lapsed lease: %v, %v", held, err)
	}
	if len(lastSeen) == 0 || lastSeen[len(lastSeen)-1] != "node-a" {
		t.Fatalf("Defer was told the last holders %v, want node-a", lastSeen)
	}
	if held, err := lc.TryAcquire(ctx); err != nil || !held || lc.Fence() != 2 {
		t.Fatalf("node c: held %v fence %d, %v", held, lc.Fence(), err)
	}
	if h, err := a.Holder(ctx, "deployment/x"); err != nil || h != "node-c" {
		t.Fatalf("holder %q, %v", h, err)
	}
}
