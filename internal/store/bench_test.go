package store_test

import (
	"context"
	"testing"

	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

// BenchmarkTx measures one small write transaction (an insert) on the
// backend storetest opens: SQLite, or PostgreSQL with
// KEYLINE_TEST_DATABASE_URL, where every write transaction also takes the
// cluster-wide writer lock.
func BenchmarkTx(b *testing.B) {
	ctx := context.Background()
	db := storetest.Open(b)
	if err := db.Migrate(ctx, []store.Migration{{ID: "b/0001", SQL: `CREATE TABLE rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)`}}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := db.TxNoSync(ctx, func(tx *store.Tx) error {
			_, err := tx.Exec(`INSERT INTO rows (v) VALUES (?)`, "x")
			return err
		}); err != nil {
			b.Fatal(err)
		}
	}
}
