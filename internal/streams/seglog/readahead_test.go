package seglog

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/errs"
)

// readSequentially reads the partition from `from` to its end with
// ReadAppend, as a catching-up consumer does, and returns the batches'
// bytes joined and how many reads it took.
func readSequentially(t *testing.T, p *Partition, from int64, maxBytes int32) ([]byte, int) {
	t.Helper()
	var joined, buf []byte
	reads := 0
	for from < p.EndOffset() {
		var batches []byte
		var metas []BatchMeta
		var err error
		buf, batches, metas, err = p.ReadAppend(context.Background(), from, maxBytes, buf[:0])
		if err != nil {
			t.Fatalf("ReadAppend(%d): %v", from, err)
		}
		if len(metas) == 0 || metas[0].LastOffset() < from {
			t.Fatalf("ReadAppend(%d) returned %d batches from %d", from, len(metas), metas[0].BaseOffset)
		}
		joined = append(joined, batches...)
		from = metas[len(metas)-1].LastOffset() + 1
		reads++
	}
	return joined, reads
}

// waitAheadReleased waits until every read-ahead's buffer and budget are
// back.
func waitAheadReleased(t *testing.T, s *Store) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); s.aheadBytes.Load() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("read-aheads still hold %d bytes", s.aheadBytes.Load())
		}
		time.Sleep(time.Millisecond)
	}
}

// waitAheadReady waits until the partition's read-ahead has its batches,
// so that what a test does next cannot come first.
func waitAheadReady(t *testing.T, p *Partition) {
	t.Helper()
	p.aheadMu.Lock()
	if len(p.aheads) == 0 {
		p.aheadMu.Unlock()
		t.Fatal("no read-ahead started")
	}
	ra := p.aheads[len(p.aheads)-1]
	p.aheadMu.Unlock()
	<-ra.done
	if ra.err != nil || len(ra.metas) == 0 {
		t.Fatalf("read-ahead: %d batches, %v", len(ra.metas), ra.err)
	}
}

// TestReadAheadServesSequentialReadersTheSameBatches: a consumer reading
// in order gets the same bytes as Read gives, most reads come from the
// read-ahead, in both modes.
func TestReadAheadServesSequentialReadersTheSameBatches(t *testing.T) {
	for _, unsealed := range []bool{false, true} {
		opts := Options{SegmentBytes: 1 << 20, Unsealed: unsealed}
		if !unsealed {
			opts.Keys = []*DEK{newDEK(t, "dek-1")}
		}
		s := openStore(t, t.TempDir(), opts)
		p := mustPartition(t, s, "p0")
		appendN(t, p, 200, 20<<10, 4) // 4 MiB over several segments
		var want []byte
		for _, b := range readAllBatches(t, p) {
			want = append(want, b.Data...)
		}
		got, reads := readSequentially(t, p, 0, 256<<10)
		if !bytes.Equal(got, want) {
			t.Fatalf("unsealed %v: sequential ReadAppend gave %d bytes, Read %d, or other bytes", unsealed, len(got), len(want))
		}
		if hits := s.aheadHits.Load(); hits < int64(reads)-2 {
			t.Fatalf("unsealed %v: %d of %d reads came from the read-ahead", unsealed, hits, reads)
		}
		waitAheadReleased(t, s)
	}
}

// TestReadAheadServesSeveralReadersAtOnce: consumers of different groups
// catching up on one partition at different offsets, their reads
// interleaved, each find their next batches prepared.
func TestReadAheadServesSeveralReadersAtOnce(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "dek-1")}})
	p := mustPartition(t, s, "p0")
	appendN(t, p, 300, 20<<10, 2)
	var want []byte
	for _, b := range readAllBatches(t, p) {
		want = append(want, b.Data...)
	}
	type reader struct {
		from int64
		got  []byte
	}
	readers := []*reader{{from: 0}, {from: 200}, {from: 400}}
	reads := 0
	for more := true; more; {
		more = false
		for _, r := range readers {
			if r.from >= p.EndOffset() {
				continue
			}
			more = true
			_, batches, metas, err := p.ReadAppend(context.Background(), r.from, 200<<10, nil)
			if err != nil {
				t.Fatal(err)
			}
			r.got = append(r.got, batches...)
			r.from = metas[len(metas)-1].LastOffset() + 1
			reads++
		}
	}
	for i, r := range readers {
		skip := len(want) - len(r.got)
		if skip < 0 || !bytes.Equal(r.got, want[skip:]) {
			t.Fatalf("reader %d got other bytes than the log holds", i)
		}
	}
	if hits := s.aheadHits.Load(); hits < int64(reads-2*len(readers)) {
		t.Fatalf("%d of %d interleaved reads came from the read-ahead", hits, reads)
	}
	waitAheadReleased(t, s)
}

// TestReadAheadNeverServesDeletedOrClosedData: a prepared read is not
// served once retention has deleted its start, nor after the store closes
// (a locked or shredded deployment), and its budget comes back.
func TestReadAheadNeverServesDeletedOrClosedData(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "dek-1")}, SegmentBytes: 256 << 10})
	p := mustPartition(t, s, "p0")
	appendN(t, p, 100, 20<<10, 1)
	ctx := context.Background()
	_, _, metas, err := p.ReadAppend(ctx, 0, 128<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	next := metas[len(metas)-1].LastOffset() + 1
	waitAheadReady(t, p)
	if err := p.DeleteBefore(next + 20); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := p.ReadAppend(ctx, next, 128<<10, nil); !errs.Is(errs.Invalid, err) {
		t.Fatalf("read of deleted offsets: %v, want out of range", err)
	}
	if s.aheadHits.Load() != 0 {
		t.Fatal("a deleted offset was served from the read-ahead")
	}

	_, _, metas, err = p.ReadAppend(ctx, p.StartOffset(), 128<<10, nil)
	if err != nil {
		t.Fatal(err)
	}
	next = metas[len(metas)-1].LastOffset() + 1
	waitAheadReady(t, p)
	s.Close()
	if _, _, _, err := p.ReadAppend(ctx, next, 128<<10, nil); err == nil {
		t.Fatal("a closed store served a read")
	}
	waitAheadReleased(t, s)
}

// TestReadAheadBudgetIsBounded: however many partitions are read, the
// read-aheads of a store hold at most aheadStoreBytes.
func TestReadAheadBudgetIsBounded(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "dek-1")}})
	var parts []*Partition
	for i := range 12 {
		p := mustPartition(t, s, string(rune('a'+i)))
		appendN(t, p, 3, 4<<20, 1)
		parts = append(parts, p)
	}
	for _, p := range parts {
		if _, _, _, err := p.ReadAppend(context.Background(), 0, 8<<20, nil); err != nil {
			t.Fatal(err)
		}
		if held := s.aheadBytes.Load(); held > aheadStoreBytes {
			t.Fatalf("read-aheads hold %d bytes, over %d", held, aheadStoreBytes)
		}
	}
	if s.aheadBytes.Load() == 0 {
		t.Fatal("no read-ahead started")
	}
	for _, p := range parts {
		p.discardAhead()
	}
	waitAheadReleased(t, s)
}

// A reader fetching from the same offset over and over (never reading on
// from where its last read ended) gets nothing prepared after its first
// read: each would be decrypted, held and wiped for nothing.
func TestRereadingTheSameOffsetPreparesNothing(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "dek-1")}})
	p := mustPartition(t, s, "p0")
	appendN(t, p, 100, 20<<10, 1)
	for i := range 4 { // sizes vary, as a quota-paced budget does
		if _, _, _, err := p.ReadAppend(context.Background(), 0, int32(128<<10+i*(32<<10)), nil); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.aheadStarts.Load(); n != 1 {
		t.Fatalf("%d read-aheads started for 4 reads from offset 0; want the first read's only", n)
	}
	p.discardAhead()
	waitAheadReleased(t, s)
}
