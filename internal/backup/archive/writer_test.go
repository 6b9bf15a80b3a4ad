package archive_test

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams/seglog"
)

func batchAt(base int64, records int32) seglog.BatchMeta {
	m := seglogMeta(records)
	m.BaseOffset = base
	return m
}

// TestWriterRefusesRecordsOutOfOrder: a backup that would not restore to
// what its contents promise is refused when written, with Invalid.
func TestWriterRefusesRecordsOutOfOrder(t *testing.T) {
	two := archive.Contents{Meta: 1, Partitions: []archive.PartitionRange{{Name: "a", Start: 5, End: 15}, {Name: "b", Start: 0, End: 0}}}
	type step func(w *archive.Writer) error
	begin := func(c archive.Contents) step { return func(w *archive.Writer) error { return w.Begin(c) } }
	meta := func(w *archive.Writer) error { return w.PutMeta("k", []byte("v")) }
	part := func(i int) step { return func(w *archive.Writer) error { return w.BeginPartition(two.Partitions[i]) } }
	batch := func(base int64, n int32) step {
		return func(w *archive.Writer) error { return w.PutBatch(batchAt(base, n), []byte("data")) }
	}
	closeW := func(w *archive.Writer) error { return w.Close() }
	for _, c := range []struct {
		name  string
		steps []step
	}{
		{"metadata before the contents", []step{meta}},
		{"contents twice", []step{begin(two), begin(two)}},
		{"partitions not sorted", []step{begin(archive.Contents{Partitions: []archive.PartitionRange{{Name: "b"}, {Name: "a"}}})}},
		{"partition range reversed", []step{begin(archive.Contents{Partitions: []archive.PartitionRange{{Name: "a", Start: 3, End: 2}}})}},
		{"more metadata than listed", []step{begin(two), meta, meta}},
		{"partition before the metadata", []step{begin(two), part(0)}},
		{"partition out of order", []step{begin(two), meta, part(1)}},
		{"batch outside a partition", []step{begin(two), meta, batch(5, 1)}},
		{"first batch before the start", []step{begin(two), meta, part(0), batch(0, 5)}},
		// Gaps between batches are allowed: a compacted log has them.
		{"batches overlapping", []step{begin(two), meta, part(0), batch(5, 2), batch(6, 1)}},
		{"batch going back", []step{begin(two), meta, part(0), batch(7, 2), batch(5, 1)}},
		{"batch past the end", []step{begin(two), meta, part(0), batch(5, 11)}},
		{"partition left short", []step{begin(two), meta, part(0), batch(5, 5), part(1)}},
		{"close with a partition missing", []step{begin(two), meta, part(0), batch(5, 10), closeW}},
		{"close without metadata", []step{begin(two), closeW}},
		{"batch without offsets", []step{begin(two), meta, part(0), batch(5, 0)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, err := archive.NewWriter(context.Background(), io.Discard, rootKey(t), archive.WriterOptions{BackupID: "b", Created: time.Now()})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			for i, s := range c.steps {
				err = s(w)
				if i < len(c.steps)-1 && err != nil {
					t.Fatalf("step %d failed early: %v", i, err)
				}
			}
			if e := errs.As(err); e == nil || e.Kind != errs.Invalid {
				t.Fatalf("last step = %v, want Invalid", err)
			}
			if err := w.Close(); err == nil {
				t.Fatal("Close succeeded after a refused record")
			}
		})
	}
}

func TestWriterNeedsIdentityAndTime(t *testing.T) {
	// Any chunk size in range works, powers of two or not.
	for _, size := range []int{4 << 10, 100000, 16 << 20} {
		if _, err := archive.NewWriter(context.Background(), io.Discard, rootKey(t), archive.WriterOptions{BackupID: "b", Created: time.Now(), ChunkSize: size}); err != nil {
			t.Errorf("chunk size %d: %v", size, err)
		}
	}
	for _, o := range []archive.WriterOptions{
		{Created: time.Now()},
		{BackupID: "b"},
		{BackupID: "b", Created: time.Now(), ChunkSize: 100},
		{BackupID: string(make([]byte, 65)), Created: time.Now()},
	} {
		if _, err := archive.NewWriter(context.Background(), io.Discard, rootKey(t), o); errs.KindOf(err) != errs.Invalid {
			t.Errorf("NewWriter(%+v) = %v, want Invalid", o, err)
		}
	}
}

func TestRestoreRefusesStoreWithData(t *testing.T) {
	src := openStore(t, tempDir(t, "src"), storeOptions("dep-1"))
	fillStore(t, src, 3, nil)
	b := backupBytes(t, src, 0)
	r, err := archive.NewReader(context.Background(), bytes.NewReader(b), rootKey(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dstDir := tempDir(t, "dst")
	dst := openStore(t, dstDir, storeOptions("dep-2"))
	dst.PutMeta("existing", []byte("x"))
	if err := archive.Restore(context.Background(), r, dst, nil); errs.KindOf(err) != errs.Conflict {
		t.Fatalf("Restore into a store with data = %v, want Conflict", err)
	}
	if err := archive.RestoreDir(context.Background(), r, dstDir, storeOptions("x"), nil); errs.KindOf(err) != errs.Conflict {
		t.Fatalf("RestoreDir onto an existing directory = %v, want Conflict", err)
	}
}

func TestProgressReachesTotal(t *testing.T) {
	ctx := context.Background()
	src := openStore(t, tempDir(t, "src"), storeOptions("dep-1"))
	fillStore(t, src, 200, nil)
	var last [2]int64
	calls := 0
	record := func(done, total int64) {
		if done < last[0] || done > total {
			t.Fatalf("progress went %d -> %d of %d", last[0], done, total)
		}
		last, calls = [2]int64{done, total}, calls+1
	}
	var buf bytes.Buffer
	w, err := archive.NewWriter(ctx, &buf, rootKey(t), archive.WriterOptions{BackupID: "b", Created: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := archive.Snapshot(ctx, src, w, record); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if last[0] != last[1] || last[1] == 0 || calls < 2 {
		t.Fatalf("snapshot progress ended at %v after %d calls", last, calls)
	}
	want := last[1]
	r, err := archive.NewReader(ctx, &buf, rootKey(t))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	last, calls = [2]int64{}, 0
	if err := archive.RestoreDir(ctx, r, tempDir(t, "dst"), storeOptions("dep-2"), record); err != nil {
		t.Fatal(err)
	}
	if last[0] != want || last[1] != want {
		t.Fatalf("restore progress ended at %v, want %d of %d", last, want, want)
	}
}

// TestRetentionDuringSnapshotFailsTheBackup: when retention deletes
// offsets the backup promised before it read them, the backup fails with
// Conflict rather than leaving a hole.
func TestRetentionDuringSnapshotFailsTheBackup(t *testing.T) {
	ctx := context.Background()
	src := openStore(t, tempDir(t, "src"), storeOptions("dep-1"))
	fillStore(t, src, 60, nil)
	p, err := src.Partition("orders-0", false)
	if err != nil {
		t.Fatal(err)
	}
	// Progress is first called once the ranges are fixed, before any
	// batch is read.
	retention := func(done, total int64) {
		if done == 0 {
			if err := p.DeleteBefore(p.EndOffset() - 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	w, err := archive.NewWriter(ctx, io.Discard, rootKey(t), archive.WriterOptions{BackupID: "b", Created: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	err = archive.Snapshot(ctx, src, w, retention)
	if e := errs.As(err); e == nil || e.Kind != errs.Conflict || e.Code != "BACKUP_SOURCE_CHANGED" {
		t.Fatalf("Snapshot = %v, want Conflict BACKUP_SOURCE_CHANGED", err)
	}
}
