package archive_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/backup"
	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/streams/seglog"
)

const testKeyCRN = "crn:v1:bluemix:public:kms:us-south:a/acct1:inst1:key:k1"

func rootKey(t testing.TB) *archive.LocalRootKey {
	k, err := archive.NewLocalRootKey(testKeyCRN, "v1", bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func storeOptions(id string) seglog.Options {
	return seglog.Options{StoreID: id, Keys: []*seglog.DEK{{ID: "dek-1", Key: seal.RandomKey()}}, SegmentBytes: 256 << 10}
}

func openStore(t testing.TB, dir string, opts seglog.Options) *seglog.Store {
	t.Helper()
	s, err := seglog.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// batchData is a batch's bytes: random, or repetitive text that compresses
// about as well as JSON events do, with marker somewhere in it when given.
func batchData(rng *mrand.Rand, size int, marker []byte) []byte {
	b := make([]byte, size)
	if rng.IntN(2) == 0 {
		rand.Read(b)
	} else {
		words := []string{`{"order":`, `"status":"shipped",`, `"amount":`, `"customer":"c-`, `"}` + "\n"}
		b = b[:0]
		for len(b) < size {
			b = append(b, words[rng.IntN(len(words))]...)
			b = fmt.Appendf(b, "%d", rng.IntN(100000))
		}
		b = b[:size]
	}
	if marker != nil && size > len(marker) {
		copy(b[rng.IntN(size-len(marker)):], marker)
	}
	return b
}

// fillStore gives s partitions covering the cases a restore must
// reproduce: data from offset 0 across several segments, a log-start
// offset inside a batch, a partition emptied by retention (start = end >
// 0), an empty partition; and metadata.
func fillStore(t testing.TB, s *seglog.Store, batches int, marker []byte) {
	t.Helper()
	ctx := context.Background()
	rng := mrand.New(mrand.NewPCG(1, 2))
	appendBatches := func(p *seglog.Partition, n int) {
		for i := range n {
			m := seglog.BatchMeta{Records: int32(1 + rng.IntN(20)), FirstTimestamp: int64(1700000000000 + i), MaxTimestamp: int64(1700000000050 + i), ProducerID: int64(rng.IntN(3) - 1), ProducerEpoch: 2, BaseSequence: int32(i)}
			if _, err := p.Append(ctx, m, batchData(rng, 100+rng.IntN(8000), marker)); err != nil {
				t.Fatal(err)
			}
		}
	}
	part := func(name string) *seglog.Partition {
		p, err := s.Partition(name, true)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	appendBatches(part("orders-0"), batches)
	p1 := part("orders-1")
	appendBatches(p1, batches)
	// A start offset inside a batch, and whole segments removed below it.
	mid := p1.Tail(batches / 2)[0]
	if err := p1.DeleteBefore(mid.BaseOffset + int64(mid.Records)/2 + 1); err != nil {
		t.Fatal(err)
	}
	p2 := part("trimmed-0")
	appendBatches(p2, 5)
	if err := p2.DeleteBefore(p2.EndOffset()); err != nil {
		t.Fatal(err)
	}
	part("empty-0")
	for i, v := range [][]byte{[]byte("compact"), []byte(`{"retention.ms":604800000}`), marker, {}} {
		if err := s.PutMeta(fmt.Sprintf("topic/%d/config", i), v); err != nil {
			t.Fatal(err)
		}
	}
}

// backupTo writes a backup of s into a new object of v.
func backupTo(t testing.TB, s *seglog.Store, v volume.Volume, name string, opts archive.WriterOptions) archive.Header {
	t.Helper()
	if opts.BackupID == "" {
		opts.BackupID = "backup-" + name
	}
	opts.Created = time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)
	h, err := backup.Take(context.Background(), s, v, name, rootKey(t), opts, nil)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// backupBytes is a backup of s in memory.
func backupBytes[P archive.PartitionLog](t testing.TB, s archive.LogStore[P], chunkSize int) []byte {
	t.Helper()
	var buf bytes.Buffer
	ctx := context.Background()
	w, err := archive.NewWriter(ctx, &buf, rootKey(t), archive.WriterOptions{BackupID: "b1", Created: time.Unix(1800000000, 0), ChunkSize: chunkSize})
	if err != nil {
		t.Fatal(err)
	}
	if err := archive.Snapshot(ctx, s, w, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// restoreFrom restores the backup in src into a new store directory.
func restoreFrom(t testing.TB, src io.Reader, dir string, opts seglog.Options) error {
	t.Helper()
	ctx := context.Background()
	r, err := archive.NewReader(ctx, src, rootKey(t))
	if err != nil {
		return err
	}
	defer r.Close()
	return archive.RestoreDir(ctx, r, dir, opts, nil)
}

type partitionImage struct {
	Start, End int64
	Batches    []seglog.StoredBatch
}

// image is everything a store shows: metadata, and each partition's
// offsets and batches.
func image[P archive.PartitionLog](t testing.TB, s archive.LogStore[P]) (map[string][]byte, map[string]partitionImage) {
	t.Helper()
	parts := map[string]partitionImage{}
	for _, name := range s.Partitions() {
		p, err := s.Partition(name, false)
		if err != nil {
			t.Fatal(err)
		}
		img := partitionImage{Start: p.StartOffset(), End: p.EndOffset()}
		for from := img.Start; from < img.End; {
			bs, err := p.Read(context.Background(), from, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			img.Batches = append(img.Batches, bs...)
			from = bs[len(bs)-1].Meta.LastOffset() + 1
		}
		parts[name] = img
	}
	return s.ListMeta(""), parts
}

func sameImage[P, Q archive.PartitionLog](t testing.TB, want archive.LogStore[P], got archive.LogStore[Q]) {
	t.Helper()
	wm, wp := image(t, want)
	gm, gp := image(t, got)
	if len(wm) != len(gm) {
		t.Fatalf("restored %d metadata entries, want %d", len(gm), len(wm))
	}
	for k, v := range wm {
		if !bytes.Equal(gm[k], v) {
			t.Fatalf("metadata %q differs after restore", k)
		}
	}
	if len(wp) != len(gp) {
		t.Fatalf("restored %d partitions, want %d", len(gp), len(wp))
	}
	for name, w := range wp {
		g, ok := gp[name]
		if !ok {
			t.Fatalf("partition %s is missing after restore", name)
		}
		if g.Start != w.Start || g.End != w.End || len(g.Batches) != len(w.Batches) {
			t.Fatalf("partition %s: restored [%d,%d) with %d batches, want [%d,%d) with %d", name, g.Start, g.End, len(g.Batches), w.Start, w.End, len(w.Batches))
		}
		for i := range w.Batches {
			if g.Batches[i].Meta != w.Batches[i].Meta || !bytes.Equal(g.Batches[i].Data, w.Batches[i].Data) {
				t.Fatalf("partition %s: batch %d differs after restore: %+v, want %+v", name, i, g.Batches[i].Meta, w.Batches[i].Meta)
			}
		}
	}
}

func tempDir(t testing.TB, name string) string { return filepath.Join(t.TempDir(), name) }

func seglogMeta(records int32) seglog.BatchMeta {
	return seglog.BatchMeta{Records: records, FirstTimestamp: 1, MaxTimestamp: 2, ProducerID: -1, BaseSequence: -1}
}

func archivePlainOptions() archive.WriterOptions { return archive.WriterOptions{} }
