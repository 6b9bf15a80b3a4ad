package archive

import (
	"context"
	"errors"
	"github.com/keyline/keyline/internal/durable"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// Progress is told how many offsets (records) of how many were copied.
// It may be nil.
type Progress func(done, total int64)

// readAhead is how much batch data Snapshot reads per seglog call, and how
// many such reads wait decrypted while the writer compresses.
const (
	readBytes = 4 << 20
	readAhead = 2
)

// Snapshot writes a consistent copy of store (seglog's or objlog's) to w: every metadata entry
// and, for each partition, the offsets from its log-start to the end
// offset it had when Snapshot began (appends after that are not in the
// backup). It calls w.Begin; the caller calls w.Close after it and commits
// the volume object only when both succeed.
func Snapshot[P PartitionLog](ctx context.Context, store LogStore[P], w *Writer, progress Progress) error {
	const op = "backup/archive.Snapshot"
	// Fix the ranges and the metadata first: this is the moment the backup
	// shows.
	meta := store.ListMeta("")
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []P
	c := Contents{Meta: len(keys)}
	for _, name := range store.Partitions() {
		p, err := store.Partition(name, false)
		if errs.KindOf(err) == errs.NotExist {
			continue // dropped since Partitions listed it
		}
		if err != nil {
			return err
		}
		start, end := p.StartOffset(), p.EndOffset()
		parts = append(parts, p)
		c.Partitions = append(c.Partitions, PartitionRange{Name: name, Start: start, End: end})
	}
	if err := w.Begin(c); err != nil {
		return err
	}
	for _, k := range keys {
		if err := w.PutMeta(k, meta[k]); err != nil {
			return err
		}
	}
	tracker := progressTracker{fn: progress, total: c.TotalOffsets()}
	tracker.report()
	for i, p := range parts {
		pr := c.Partitions[i]
		if err := w.BeginPartition(pr); err != nil {
			return err
		}
		if err := copyPartition(ctx, op, p, pr, w, &tracker); err != nil {
			return err
		}
	}
	tracker.flush()
	return nil
}

type readResult struct {
	batches []seglog.StoredBatch
	err     error
}

// copyPartition writes the partition's batches in [pr.Start, pr.End) to w.
// A goroutine reads (and decrypts) ahead while w compresses and seals.
func copyPartition(ctx context.Context, op string, p PartitionLog, pr PartitionRange, w *Writer, tracker *progressTracker) error {
	if pr.Start == pr.End {
		return nil
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reads := make(chan readResult, readAhead)
	go func() {
		defer close(reads)
		for from := pr.Start; from < pr.End; {
			bs, err := p.Read(ctx, from, readBytes)
			if err == nil && len(bs) == 0 {
				err = errs.E(op, errs.Internal, "PARTITION_READ_EMPTY", "A partition read returned no batches inside its range")
			}
			if e := errs.As(err); e != nil && (e.Code == seglog.CodeOffsetOutOfRange || e.Code == seglog.CodePartitionNotFound) {
				err = errs.E(op, errs.Conflict, "BACKUP_SOURCE_CHANGED", "Retention or a topic deletion removed data while the backup read it; run the backup again").Because(err)
			}
			// Keep only batches inside the range fixed at the start.
			for i, b := range bs {
				if b.Meta.BaseOffset >= pr.End {
					bs = bs[:i]
					break
				}
			}
			select {
			case reads <- readResult{bs, err}:
			case <-ctx.Done():
				return
			}
			if err != nil {
				return
			}
			from = bs[len(bs)-1].Meta.LastOffset() + 1
		}
	}()
	for r := range reads {
		if r.err != nil {
			return r.err
		}
		for _, b := range r.batches {
			if err := w.PutBatch(b.Meta, b.Data); err != nil {
				return err
			}
			tracker.add(min(b.Meta.LastOffset()+1, pr.End)-max(b.Meta.BaseOffset, pr.Start), len(b.Data))
		}
	}
	return ctx.Err()
}

// progressTracker calls a Progress about every 4 MiB of batch data.
type progressTracker struct {
	fn          Progress
	done, total int64
	pending     int
}

func (t *progressTracker) add(offsets int64, bytes int) {
	t.done += offsets
	t.pending += bytes
	if t.pending >= 4<<20 {
		t.report()
	}
}

func (t *progressTracker) flush() {
	if t.pending > 0 {
		t.report()
	}
}

func (t *progressTracker) report() {
	t.pending = 0
	if t.fn != nil {
		t.fn(t.done, t.total)
	}
}

// Restore writes the backup's records into dst, an empty store, so that
// every partition holds the same batches at the same offsets from the same
// log-start offset, and the metadata is the same. It returns nil only when
// the reader reached the authenticated end; on any error dst holds a
// partial copy that the caller must throw away (RestoreDir does).
func Restore[P PartitionLog](ctx context.Context, r *Reader, dst LogStore[P], progress Progress) error {
	const op = "backup/archive.Restore"
	if len(dst.Partitions()) > 0 || len(dst.ListMeta("")) > 0 {
		return errs.E(op, errs.Conflict, "RESTORE_TARGET_NOT_EMPTY", "A backup is restored only into an empty store")
	}
	tracker := progressTracker{fn: progress, total: r.Contents().TotalOffsets()}
	tracker.report()
	var (
		cur     PartitionRange
		p       P
		created bool // p is the current partition
		open    bool // a partition record was read and not yet finished
		batches appender
	)
	finish := func() error {
		if !open {
			return nil
		}
		open = false
		if !created { // no batches: only the offsets remain
			_, err := createPartitionAt(op, dst, cur.Name, cur.Start)
			return err
		}
		if err := batches.wait(); err != nil {
			return err
		}
		if p.StartOffset() < cur.Start { // the first batch straddles the start
			return p.DeleteBefore(cur.Start)
		}
		return nil
	}
	for {
		if err := ctx.Err(); err != nil {
			return errs.E(op, errs.Unavailable, "CANCELED", "The restore was canceled").Because(err)
		}
		rec, err := r.Next()
		if err == io.EOF {
			if err := finish(); err != nil {
				return err
			}
			tracker.flush()
			return nil
		}
		if err != nil {
			return err
		}
		switch rec.Kind {
		case RecordMeta:
			err = dst.PutMeta(rec.Key, rec.Value)
		case RecordPartition:
			if err = finish(); err == nil {
				cur, created, open = rec.Partition, false, true
			}
		case RecordBatch:
			if !created {
				if p, err = createPartitionAt(op, dst, cur.Name, min(cur.Start, rec.Batch.BaseOffset)); err != nil {
					return err
				}
				created = true
			}
			var off int64
			off, err = batches.append(ctx, p, rec.Batch, rec.Data) // a compacted log has gaps
			if err == nil && off != rec.Batch.BaseOffset {
				err = errs.E(op, errs.Internal, "RESTORE_OFFSET_MISMATCH", "A restored batch landed at another offset")
			}
			tracker.add(min(rec.Batch.LastOffset()+1, cur.End)-max(rec.Batch.BaseOffset, cur.Start), len(rec.Data))
		}
		if err != nil {
			return err
		}
	}
}

// createPartitionAt creates an empty partition whose next offset is start.
func createPartitionAt[P PartitionLog](op string, dst LogStore[P], name string, start int64) (P, error) {
	p, err := dst.CreatePartitionAt(name, start)
	if errs.KindOf(err) == errs.Conflict {
		var none P
		return none, errs.E(op, errs.Conflict, "RESTORE_PARTITION_EXISTS", "The restore target already has the partition").Because(err)
	}
	return p, err
}

// Target is where a restore writes: a new log, kept only when the whole
// backup was read, authenticated and stored.
type Target interface {
	// Fill runs restore on the new, empty log and keeps the log only when
	// restore returns nil and the log is stored; on any error nothing is
	// left.
	Fill(ctx context.Context, restore func(Log) error) error
}

// DirTarget is a new seglog store at Dir, opened with Options.
type DirTarget struct {
	Dir     string
	Options seglog.Options
}

// RestoreDir restores the backup into a new store at dir: DirTarget.
func RestoreDir(ctx context.Context, r *Reader, dir string, opts seglog.Options, progress Progress) error {
	return DirTarget{Dir: dir, Options: opts}.Fill(ctx, func(l Log) error { return Restore(ctx, r, l, progress) })
}

// Fill builds the store in a temporary directory beside Dir, and renames
// it to Dir after restore succeeded and the store was closed (synced). On
// any error nothing is left at Dir, and the temporary directory is
// removed. Dir must not exist.
func (t DirTarget) Fill(ctx context.Context, restore func(Log) error) error {
	const op = "backup/archive.RestoreDir"
	dir := t.Dir
	if _, err := os.Lstat(dir); err == nil {
		return errs.E(op, errs.Conflict, "RESTORE_TARGET_EXISTS", "The restore target already exists")
	} else if !errors.Is(err, os.ErrNotExist) {
		return errs.Internalf(op, err)
	}
	tmp := dir + ".restoring"
	// A restore that died with its process left this behind.
	if err := os.RemoveAll(tmp); err != nil {
		return errs.Internalf(op, err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return errs.Internalf(op, err)
	}
	st, err := seglog.Open(tmp, t.Options)
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	err = restore(LogOf(st))
	if cerr := st.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if err = os.Rename(tmp, dir); err == nil {
			err = durable.SyncDir(filepath.Dir(dir))
		}
		if err != nil {
			err = errs.Internalf(op, err)
		}
	}
	if err != nil {
		os.RemoveAll(tmp)
		return err
	}
	return nil
}
