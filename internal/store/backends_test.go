package store_test

// These tests run on SQLite, and on PostgreSQL too when
// KEYLINE_TEST_DATABASE_URL is set (scripts/test does).

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

func TestMigrationsRunOnceAndTxRollsBack(t *testing.T) {
	ctx := context.Background()
	dir, url := t.TempDir(), storetest.URL(t)
	db := storetest.OpenAt(t, dir, url)
	ms := []store.Migration{{ID: "t/0001", SQL: "CREATE TABLE things (id TEXT PRIMARY KEY); CREATE INDEX things_id ON things(id)"}}
	if err := db.Migrate(ctx, ms); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db = storetest.OpenAt(t, dir, url)
	if err := db.Migrate(ctx, ms); err != nil {
		t.Fatalf("second run of an applied migration: %v", err)
	}
	committed := false
	if err := db.Tx(ctx, func(tx *store.Tx) error {
		tx.OnCommit(func() { committed = true })
		_, err := tx.Exec(`INSERT INTO things (id) VALUES (?)`, "a")
		return err
	}); err != nil || !committed {
		t.Fatalf("commit: err=%v committed=%v", err, committed)
	}
	boom := errors.New("boom")
	if err := db.Tx(ctx, func(tx *store.Tx) error {
		tx.OnCommit(func() { t.Error("OnCommit ran for a rolled back transaction") })
		if _, err := tx.Exec(`INSERT INTO things (id) VALUES (?)`, "b"); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("rollback returned %v", err)
	}
	var n int
	if err := db.Read(ctx, func(tx *store.Tx) error { return tx.QueryRow(`SELECT COUNT(*) FROM things`).Scan(&n) }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("rows = %d, want 1 (the rolled back insert must be gone)", n)
	}
	err := db.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`INSERT INTO things (id) VALUES (?)`, "a")
		return err
	})
	if !store.IsUnique(err) {
		t.Fatalf("duplicate insert: %v, want a uniqueness violation", err)
	}
	err = db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT id FROM things WHERE id = ?`, "zz").Scan(new(string))
	})
	if !store.IsNoRows(err) {
		t.Fatalf("missing row: %v, want no rows", err)
	}
}

// TestPortableSchemaBehavesAlike checks what services rely on across
// backends: auto-assigned integer keys, 64-bit integers, bytes, booleans
// stored as 0/1, '?' inside string literals, and text ordered bytewise
// (keyset pagination).
func TestPortableSchemaBehavesAlike(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t)
	if err := db.Migrate(ctx, []store.Migration{{ID: "t/0001", SQL: `CREATE TABLE rows (
		seq INTEGER PRIMARY KEY AUTOINCREMENT,
		name TEXT NOT NULL,
		big INTEGER NOT NULL,
		flag INTEGER NOT NULL,
		data BLOB,
		note TEXT NOT NULL DEFAULT 'what?'
	)`}}); err != nil {
		t.Fatal(err)
	}
	names := []string{"b", "B", "a", "_x", "Z", "é"}
	if err := db.Tx(ctx, func(tx *store.Tx) error {
		for i, name := range names {
			if _, err := tx.Exec(`INSERT INTO rows (name, big, flag, data) VALUES (?, ?, ?, ?)`, name, int64(1)<<40+int64(i), i%2 == 0, []byte{0, byte(i), 0xff}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var got []string
	err := db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT seq, name, big, flag, data, note FROM rows WHERE note = 'what?' AND name > ? ORDER BY name LIMIT ? OFFSET ?`, "", 10, 0)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var (
				seq, big int64
				name     string
				flag     bool
				data     []byte
				note     string
			)
			if err := rows.Scan(&seq, &name, &big, &flag, &data, &note); err != nil {
				return err
			}
			i := int(seq - 1)
			if big != int64(1)<<40+int64(i) || flag != (i%2 == 0) || string(data) != string([]byte{0, byte(i), 0xff}) || names[i] != name {
				t.Errorf("row %d = %q %d %v %x, want %q %d %v", seq, name, big, flag, data, names[i], int64(1)<<40+int64(i), i%2 == 0)
			}
			got = append(got, name)
		}
		return rows.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "B Z _x a b é"; strings.Join(got, " ") != want {
		t.Fatalf("ORDER BY name = %q, want byte order %q", strings.Join(got, " "), want)
	}
}

func TestOnCommitMayStartATransaction(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t)
	if err := db.Migrate(ctx, []store.Migration{{ID: "t/0001", SQL: "CREATE TABLE n (v INTEGER)"}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- db.Tx(ctx, func(tx *store.Tx) error {
			tx.OnCommit(func() {
				if err := db.TxNoSync(ctx, func(tx *store.Tx) error { _, err := tx.Exec(`INSERT INTO n VALUES (2)`); return err }); err != nil {
					t.Error(err)
				}
			})
			_, err := tx.Exec(`INSERT INTO n VALUES (1)`)
			return err
		})
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a transaction started from OnCommit deadlocked on the write connection")
	}
}

func TestStateChangesAlwaysCommitSynchronously(t *testing.T) {
	ctx := context.Background()
	url := storetest.URL(t)
	db := storetest.OpenAt(t, t.TempDir(), url)
	// SQLite: synchronous 2 (FULL) or 1 (NORMAL); PostgreSQL:
	// synchronous_commit on or off.
	query, full, relaxed := `PRAGMA synchronous`, "2", "1"
	if url != "" {
		query, full, relaxed = `SHOW synchronous_commit`, "on", "off"
	}
	for i, nosync := range []bool{false, true, true, false, true, false} {
		run, want := db.Tx, full
		if nosync {
			run, want = db.TxNoSync, relaxed
		}
		if err := run(ctx, func(tx *store.Tx) error {
			var got string
			if err := tx.QueryRow(query).Scan(&got); err != nil {
				return err
			}
			if got != want {
				t.Errorf("step %d (nosync %v): %s = %s, want %s", i, nosync, query, got, want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOpenRejectsOtherURLsWithoutShowingThePassword(t *testing.T) {
	for _, url := range []string{"mysql://keyline:s3cret@db/keyline", "s3cret", "postgres://keyline:s3cret@127.0.0.1:1/keyline?connect_timeout=2"} {
		_, err := store.Open(context.Background(), t.TempDir(), url)
		if err == nil {
			t.Fatalf("Open(%q) succeeded", url)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Open(%q): the error shows the password: %v", url, err)
		}
	}
}

// TestReadSeesOneSnapshot commits a write in the middle of a Read: the Read's
// later queries must not see it (PostgreSQL's default isolation would).
func TestReadSeesOneSnapshot(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t)
	if err := db.Migrate(ctx, []store.Migration{{ID: "t/0001", SQL: "CREATE TABLE n (v INTEGER)"}}); err != nil {
		t.Fatal(err)
	}
	insert := func(v int) {
		if err := db.Tx(ctx, func(tx *store.Tx) error { _, err := tx.Exec(`INSERT INTO n (v) VALUES (?)`, v); return err }); err != nil {
			t.Fatal(err)
		}
	}
	insert(1)
	count := func(tx *store.Tx) int {
		var n int
		if err := tx.QueryRow(`SELECT COUNT(*) FROM n`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if err := db.Read(ctx, func(tx *store.Tx) error {
		before := count(tx)
		insert(2)
		if after := count(tx); after != before {
			t.Errorf("one Read counted %d rows, then %d after another transaction committed", before, after)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Read(ctx, func(tx *store.Tx) error {
		if n := count(tx); n != 2 {
			t.Errorf("a new Read counts %d rows, want 2", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
