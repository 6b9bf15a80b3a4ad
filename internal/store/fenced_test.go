package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

// TestFencedTxDoesNotWaitForTheWritersLock commits a fenced transaction
// while another node's write transaction holds the writers' lock.
func TestFencedTxDoesNotWaitForTheWritersLock(t *testing.T) {
	url := storetest.URL(t)
	if url == "" {
		t.Skip("the writers' lock is PostgreSQL's; set KEYLINE_TEST_DATABASE_URL")
	}
	ctx := context.Background()
	a, b := storetest.OpenAt(t, t.TempDir(), url), storetest.OpenAt(t, t.TempDir(), url)
	if err := a.Migrate(ctx, []store.Migration{{ID: "t/0001", SQL: `CREATE TABLE ends (id INTEGER PRIMARY KEY, v INTEGER NOT NULL); INSERT INTO ends (id, v) VALUES (1, 0)`}}); err != nil {
		t.Fatal(err)
	}
	held, release := make(chan struct{}), make(chan struct{})
	go a.Tx(ctx, func(*store.Tx) error {
		close(held)
		<-release
		return nil
	})
	<-held
	defer close(release)
	done := make(chan error, 1)
	go func() {
		done <- b.TxFenced(ctx, func(tx *store.Tx) error {
			_, err := tx.Exec(`UPDATE ends SET v = 1 WHERE id = 1 AND v = 0`)
			return err
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the fenced transaction waited for the writers' lock")
	}
	var v int
	if err := b.Read(ctx, func(tx *store.Tx) error { return tx.QueryRow(`SELECT v FROM ends WHERE id = 1`).Scan(&v) }); err != nil || v != 1 {
		t.Fatalf("v = %d, %v; want 1", v, err)
	}
}
