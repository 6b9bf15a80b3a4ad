package store

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

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

// A transaction that writes as much as many commits counts as many toward
// the next checkpoint.
func TestWeighedCommitBringsTheCheckpointForward(t *testing.T) {
	ctx := context.Background()
	db, err := OpenSQLite(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.checkpointEvery = 128
	if err := db.TxNoSync(ctx, func(tx *Tx) error {
		tx.Weigh(db.checkpointEvery)
		_, err := tx.Exec(`CREATE TABLE t (v TEXT)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	waitForCheckpoints(t, db, 1)
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
