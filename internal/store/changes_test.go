package store_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

// TestWritersAreSerialAcrossProcesses opens the database twice, as two
// nodes do, and runs on both at once a rule checked inside a transaction:
// "the next number is one more than the largest". Without one writer at a
// time across the two, both read the same largest number and write the same
// next one.
func TestWritersAreSerialAcrossProcesses(t *testing.T) {
	ctx := context.Background()
	dir, url := t.TempDir(), storetest.URL(t)
	a := storetest.OpenAt(t, dir, url)
	b := storetest.OpenAt(t, dir, url)
	if err := a.Migrate(ctx, []store.Migration{{ID: "t/0001", SQL: `CREATE TABLE numbers (seq INTEGER PRIMARY KEY AUTOINCREMENT, n INTEGER NOT NULL)`}}); err != nil {
		t.Fatal(err)
	}
	const each = 40
	var wg sync.WaitGroup
	for _, db := range []*store.DB{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				err := db.Tx(ctx, func(tx *store.Tx) error {
					var max int64
					if err := tx.QueryRow(`SELECT COALESCE(MAX(n), 0) FROM numbers`).Scan(&max); err != nil {
						return err
					}
					time.Sleep(time.Millisecond) // widen the window a second writer would use
					_, err := tx.Exec(`INSERT INTO numbers (n) VALUES (?)`, max+1)
					return err
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	var rows, distinct, max int64
	var ordered int64
	err := a.Read(ctx, func(tx *store.Tx) error {
		if err := tx.QueryRow(`SELECT COUNT(*), COUNT(DISTINCT n), MAX(n) FROM numbers`).Scan(&rows, &distinct, &max); err != nil {
			return err
		}
		// seq (assigned during the transaction) must follow commit order,
		// which here is n's order.
		return tx.QueryRow(`SELECT COUNT(*) FROM numbers x JOIN numbers y ON x.seq < y.seq AND x.n > y.n`).Scan(&ordered)
	})
	if err != nil {
		t.Fatal(err)
	}
	if rows != 2*each || distinct != rows || max != rows {
		t.Fatalf("%d rows, %d distinct numbers, largest %d: two writers ran at once", rows, distinct, max)
	}
	if ordered != 0 {
		t.Fatalf("%d pairs of rows have seq out of commit order", ordered)
	}
}

// TestChangesReachAnotherProcess marks a change in one process's
// transaction: another process sharing the database is notified and reads
// it; a rolled-back transaction's mark is never seen.
func TestChangesReachAnotherProcess(t *testing.T) {
	ctx := context.Background()
	dir, url := t.TempDir(), storetest.URL(t)
	if url == "" {
		t.Skip("the change feed is PostgreSQL's: SQLite is one process")
	}
	a := storetest.OpenAt(t, dir, url)
	b := storetest.OpenAt(t, dir, url)
	l, err := b.ListenChanges(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	last, err := b.LastChange(ctx)
	if err != nil {
		t.Fatal(err)
	}
	a.Tx(ctx, func(tx *store.Tx) error {
		tx.Changed("test.thing", "rolled-back")
		return context.Canceled
	})
	if err := a.Tx(ctx, func(tx *store.Tx) error {
		tx.Changed("test.thing", "one")
		tx.Changed("test.thing", "one") // marked twice, written once
		tx.Changed("test.other", "")
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := l.Wait(wctx); err != nil {
		t.Fatalf("no notification: %v", err)
	}
	rows, err := b.ChangesSince(ctx, last, 100)
	if err != nil {
		t.Fatal(err)
	}
	got := map[store.Change]string{}
	for _, r := range rows {
		got[r.Change] = r.Origin
	}
	if len(rows) != 2 || got[store.Change{Topic: "test.thing", Key: "one"}] != a.Origin() || got[store.Change{Topic: "test.other"}] != a.Origin() {
		t.Fatalf("changes read by the other process = %+v, want test.thing/one and test.other from %s", rows, a.Origin())
	}
}

// TestNodesStartingTogetherMigrateOnce runs the same migrations from two
// processes at once, as nodes starting together do: both succeed and each
// migration runs once.
func TestNodesStartingTogetherMigrateOnce(t *testing.T) {
	ctx := context.Background()
	dir, url := t.TempDir(), storetest.URL(t)
	a := storetest.OpenAt(t, dir, url)
	b := storetest.OpenAt(t, dir, url)
	var ms []store.Migration
	for i := range 20 {
		ms = append(ms, store.Migration{ID: fmt.Sprintf("t/%04d", i), SQL: fmt.Sprintf("CREATE TABLE t%d (id TEXT PRIMARY KEY)", i),
			Func: func(tx *store.Tx) error {
				_, err := tx.Exec(fmt.Sprintf("INSERT INTO t%d (id) VALUES ('once')", i))
				return err
			}})
	}
	errc := make(chan error, 2)
	for _, db := range []*store.DB{a, b} {
		go func() { errc <- db.Migrate(ctx, ms) }()
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatalf("a node's migrations failed: %v", err)
		}
	}
	var n int
	if err := a.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT COUNT(*) FROM schema_migrations WHERE id LIKE 't/%'`).Scan(&n)
	}); err != nil || n != len(ms) {
		t.Fatalf("%d migrations recorded (%v), want %d", n, err, len(ms))
	}
}
