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
// cluster-wide writers' lock, and one that marks a change for other nodes
// (a row in keyline_changes and a notification).
func BenchmarkTx(b *testing.B) {
	ctx := context.Background()
	db := storetest.Open(b)
	if err := db.Migrate(ctx, []store.Migration{{ID: "b/0001", SQL: `CREATE TABLE rows (seq INTEGER PRIMARY KEY AUTOINCREMENT, v TEXT NOT NULL)`}}); err != nil {
		b.Fatal(err)
	}
	for _, mark := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "with-change-mark"}[mark]
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := db.TxNoSync(ctx, func(tx *store.Tx) error {
					if mark {
						tx.Changed("bench.topic", "")
					}
					_, err := tx.Exec(`INSERT INTO rows (v) VALUES (?)`, "x")
					return err
				}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
