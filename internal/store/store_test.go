package store

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMigrationsRunOnceAndTxRollsBack(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	ms := []Migration{{ID: "t/0001", SQL: "CREATE TABLE things (id TEXT PRIMARY KEY); CREATE INDEX things_id ON things(id)"}}
	if err := db.Migrate(ctx, ms); err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, ms); err != nil {
		t.Fatalf("second run of an applied migration: %v", err)
	}
	committed := false
	if err := db.Tx(ctx, func(tx *Tx) error {
		tx.OnCommit(func() { committed = true })
		_, err := tx.Exec(`INSERT INTO things (id) VALUES (?)`, "a")
		return err
	}); err != nil || !committed {
		t.Fatalf("commit: err=%v committed=%v", err, committed)
	}
	boom := errors.New("boom")
	if err := db.Tx(ctx, func(tx *Tx) error {
		tx.OnCommit(func() { t.Error("OnCommit ran for a rolled back transaction") })
		if _, err := tx.Exec(`INSERT INTO things (id) VALUES (?)`, "b"); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("rollback returned %v", err)
	}
	var n int
	if err := db.Read(ctx, func(tx *Tx) error { return tx.QueryRow(`SELECT COUNT(*) FROM things`).Scan(&n) }); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("rows = %d, want 1 (the rolled back insert must be gone)", n)
	}
	err = db.Tx(ctx, func(tx *Tx) error {
		_, err := tx.Exec(`INSERT INTO things (id) VALUES (?)`, "a")
		return err
	})
	if !IsUnique(err) {
		t.Fatalf("duplicate insert: %v, want a uniqueness violation", err)
	}
}

func TestStoredTimesSortAsText(t *testing.T) {
	base := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	times := []time.Time{base, base.Add(100 * time.Millisecond), base.Add(time.Second), base.Add(time.Nanosecond)}
	for i := range times {
		for j := range times {
			a, b := Time(times[i]), Time(times[j])
			if (a < b) != times[i].Before(times[j]) {
				t.Errorf("%s < %s is %v, but the times say %v", a, b, a < b, times[i].Before(times[j]))
			}
		}
		if got := ParseTime(Time(times[i])); !got.Equal(times[i]) {
			t.Errorf("round trip %v -> %v", times[i], got)
		}
	}
}

func TestStateChangesAlwaysCommitSynchronously(t *testing.T) {
	ctx := context.Background()
	db, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	mode := func(tx *Tx) int {
		var m int
		if err := tx.QueryRow(`PRAGMA synchronous`).Scan(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	for i, step := range []struct {
		nosync bool
		want   int // 1 NORMAL, 2 FULL
	}{{false, 2}, {true, 1}, {true, 1}, {false, 2}, {true, 1}, {false, 2}} {
		run := db.Tx
		if step.nosync {
			run = db.TxNoSync
		}
		if err := run(ctx, func(tx *Tx) error {
			if got := mode(tx); got != step.want {
				t.Errorf("step %d: synchronous=%d, want %d", i, got, step.want)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestOnCommitMayStartATransaction(t *testing.T) {
	ctx := context.Background()
	db, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.Migrate(ctx, []Migration{{ID: "t/0001", SQL: "CREATE TABLE n (v INTEGER)"}})
	done := make(chan error, 1)
	go func() {
		done <- db.Tx(ctx, func(tx *Tx) error {
			tx.OnCommit(func() {
				if err := db.TxNoSync(ctx, func(tx *Tx) error { _, err := tx.Exec(`INSERT INTO n VALUES (2)`); return err }); err != nil {
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

func TestWALStaysBoundedUnderSteadyWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	db, err := OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Migrate(ctx, []Migration{{ID: "t/0001", SQL: `CREATE TABLE blobs (id INTEGER PRIMARY KEY, v TEXT NOT NULL)`}}); err != nil {
		t.Fatal(err)
	}
	// Each commit adds at least two 4 KiB pages to the WAL; checkpoints must
	// let SQLite reuse the log from its start rather than grow it forever.
	db.checkpointEvery = 128
	commits := 8 * db.checkpointEvery
	row := strings.Repeat("x", 6000)
	for i := 1; i <= commits; i++ {
		if err := db.TxNoSync(ctx, func(tx *Tx) error {
			_, err := tx.Exec(`INSERT INTO blobs (v) VALUES (?)`, row)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if i%db.checkpointEvery == 0 {
			// The checkpointer runs beside the writer; on a loaded machine
			// it may not be scheduled before the next commits, which is
			// not what this test is about. Wait for its pass.
			waitForCheckpoints(t, db, int64(i/db.checkpointEvery))
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "keyline.db-wal"))
	if err != nil {
		t.Fatal(err)
	}
	if written := int64(commits * 2 * 4096); fi.Size() > written/2 {
		t.Fatalf("WAL is %d bytes after %d bytes of commits: it is not being reused", fi.Size(), written)
	}
}

// waitForCheckpoints waits until the checkpointer has completed n passes.
func waitForCheckpoints(t *testing.T, db *DB, n int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for db.checkpoints.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("the checkpointer completed %d passes, want %d", db.checkpoints.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}
