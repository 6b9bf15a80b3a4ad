package seglog

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/errs"
)

func newDEK(t testing.TB, id string) *DEK {
	t.Helper()
	k := make([]byte, 32)
	rand.Read(k)
	return &DEK{ID: id, Key: k}
}

func openStore(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	if opts.StoreID == "" {
		opts.StoreID = "dep-1"
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustPartition(t testing.TB, s *Store, name string) *Partition {
	t.Helper()
	p, err := s.Partition(name, true)
	if err != nil {
		t.Fatalf("Partition(%s): %v", name, err)
	}
	return p
}

// batchData is deterministic content for the batch at base, so a test can
// check any batch it reads back without keeping copies.
func batchData(base int64, size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte(int64(i)*31 + base*7)
	}
	copy(b, fmt.Sprintf("batch-%d;", base))
	return b
}

func appendN(t testing.TB, p *Partition, n, size int, records int32) []int64 {
	t.Helper()
	var bases []int64
	for range n {
		base := p.EndOffset()
		got, err := p.Append(context.Background(), BatchMeta{Records: records, FirstTimestamp: base, MaxTimestamp: base + 1, ProducerID: -1}, batchData(base, size))
		if err != nil {
			t.Fatalf("Append: %v", err)
		}
		if got != base {
			t.Fatalf("Append returned base %d, want %d", got, base)
		}
		bases = append(bases, got)
	}
	return bases
}

// readAllBatches reads the partition from its start in small fetches.
func readAllBatches(t testing.TB, p *Partition) []StoredBatch {
	t.Helper()
	var out []StoredBatch
	for from := p.StartOffset(); from < p.EndOffset(); {
		bs, err := p.Read(context.Background(), from, 4096)
		if err != nil {
			t.Fatalf("Read(%d): %v", from, err)
		}
		if len(bs) == 0 {
			t.Fatalf("Read(%d) returned nothing before the end %d", from, p.EndOffset())
		}
		out = append(out, bs...)
		from = bs[len(bs)-1].Meta.LastOffset() + 1
	}
	return out
}

// checkBatches asserts the batches are contiguous from start and hold the
// content batchData wrote.
func checkBatches(t testing.TB, bs []StoredBatch, start int64, size int) {
	t.Helper()
	next := start
	for _, b := range bs {
		if b.Meta.BaseOffset != next {
			t.Fatalf("batch at %d, want %d", b.Meta.BaseOffset, next)
		}
		if !bytes.Equal(b.Data, batchData(b.Meta.BaseOffset, size)) {
			t.Fatalf("batch %d content differs", b.Meta.BaseOffset)
		}
		next = b.Meta.LastOffset() + 1
	}
}

func TestRoundTripAcrossSegmentRollsAndReopen(t *testing.T) {
	for _, unsealed := range []bool{false, true} {
		t.Run(fmt.Sprintf("unsealed=%v", unsealed), func(t *testing.T) {
			dir := t.TempDir()
			key := newDEK(t, "k1")
			opts := Options{StoreID: "dep-1", Keys: []*DEK{key}, SegmentBytes: 4096, Unsealed: unsealed}
			s := openStore(t, dir, opts)
			p := mustPartition(t, s, "t1-0")
			appendN(t, p, 200, 300, 3)
			if n := len(p.segs); n < 10 {
				t.Fatalf("%d segments, want many rolls", n)
			}
			checkBatches(t, readAllBatches(t, p), 0, 300)
			if err := s.PutMeta("topic/orders", []byte("cfg")); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			s = openStore(t, dir, opts)
			p, err := s.Partition("t1-0", false)
			if err != nil {
				t.Fatal(err)
			}
			if p.EndOffset() != 600 || p.StartOffset() != 0 {
				t.Fatalf("offsets [%d,%d) after reopen, want [0,600)", p.StartOffset(), p.EndOffset())
			}
			checkBatches(t, readAllBatches(t, p), 0, 300)
			if v, ok := s.GetMeta("topic/orders"); !ok || string(v) != "cfg" {
				t.Fatalf("GetMeta = %q %v", v, ok)
			}
			appendN(t, p, 5, 300, 3)
			checkBatches(t, readAllBatches(t, p), 0, 300)
		})
	}
}

func TestReadSemantics(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 2048})
	p := mustPartition(t, s, "p")
	appendN(t, p, 20, 500, 10) // offsets 0..199, batches of 10
	ctx := context.Background()
	tests := []struct {
		name      string
		from      int64
		max       int32
		wantFirst int64
		wantN     int
		wantErr   errs.Kind
	}{
		{"from a batch's middle returns that batch", 15, 1000, 10, 2, 0},
		{"one batch even when larger than maxBytes", 0, 1, 0, 1, 0},
		{"spans segments", 0, 100000, 0, 20, 0},
		{"at the end is empty", 200, 1000, 0, 0, 0},
		{"past the end is out of range", 201, 1000, 0, 0, errs.Invalid},
		{"negative is out of range", -1, 1000, 0, 0, errs.Invalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bs, err := p.Read(ctx, tt.from, tt.max)
			if tt.wantErr != 0 {
				if !errs.Is(tt.wantErr, err) {
					t.Fatalf("err = %v, want kind %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(bs) != tt.wantN {
				t.Fatalf("%d batches, want %d", len(bs), tt.wantN)
			}
			if tt.wantN > 0 && bs[0].Meta.BaseOffset != tt.wantFirst {
				t.Fatalf("first batch %d, want %d", bs[0].Meta.BaseOffset, tt.wantFirst)
			}
			checkBatches(t, bs, tt.wantFirst, 500)
		})
	}
}

func TestOffsetForTimestampTailAndChanged(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 1024})
	p := mustPartition(t, s, "p")
	for i, ts := range []int64{100, 300, 200, 400} {
		if _, err := p.Append(context.Background(), BatchMeta{Records: 2, FirstTimestamp: ts, MaxTimestamp: ts}, batchData(int64(2*i), 400)); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ ts, want int64 }{{0, 0}, {100, 0}, {150, 2}, {250, 2}, {301, 6}, {500, 8}} {
		if got := p.OffsetForTimestamp(tc.ts); got != tc.want {
			t.Errorf("OffsetForTimestamp(%d) = %d, want %d", tc.ts, got, tc.want)
		}
	}
	tail := p.Tail(2)
	if len(tail) != 2 || tail[0].BaseOffset != 4 || tail[1].BaseOffset != 6 || tail[1].Size != 400 {
		t.Fatalf("Tail(2) = %+v", tail)
	}
	if got := len(p.Tail(10)); got != 4 {
		t.Fatalf("Tail(10) has %d, want 4", got)
	}
	ch := p.Changed()
	select {
	case <-ch:
		t.Fatal("Changed closed before an append")
	default:
	}
	appendN(t, p, 1, 10, 1)
	<-ch // closed by the append; a hang here fails the test by timeout
}

func TestConcurrentAppendsAreContiguousAndComplete(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprintf("sync=%v", durable), func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{StoreID: "dep-1", Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 8192, Sync: durable}
			s := openStore(t, dir, opts)
			parts := []*Partition{mustPartition(t, s, "a"), mustPartition(t, s, "b")}
			const writers, each = 8, 40
			var mu sync.Mutex
			got := map[string]map[int64]string{"a": {}, "b": {}}
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					p := parts[w%2]
					for i := range each {
						tag := fmt.Sprintf("w%d-i%d", w, i)
						base, err := p.Append(context.Background(), BatchMeta{Records: int32(1 + i%3)}, []byte(tag))
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						got[p.name][base] = tag
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			s.Close()
			s = openStore(t, dir, opts)
			for _, name := range []string{"a", "b"} {
				p, _ := s.Partition(name, false)
				bs := readAllBatches(t, p)
				if len(bs) != writers/2*each {
					t.Fatalf("%s: %d batches, want %d", name, len(bs), writers/2*each)
				}
				next := int64(0)
				for _, b := range bs {
					if b.Meta.BaseOffset != next || got[name][next] != string(b.Data) {
						t.Fatalf("%s: batch at %d holds %q, acknowledged %q at %d", name, b.Meta.BaseOffset, b.Data, got[name][next], next)
					}
					next = b.Meta.LastOffset() + 1
				}
			}
		})
	}
}

func TestMetadataStore(t *testing.T) {
	dir := t.TempDir()
	opts := Options{StoreID: "dep-1", Keys: []*DEK{newDEK(t, "k1")}, Sync: true}
	s := openStore(t, dir, opts)
	for i := range 50 {
		if err := s.PutMeta(fmt.Sprintf("group/g%d", i), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	s.PutMeta("topic/x", []byte("1"))
	s.DeleteMeta("group/g7")
	// Enough overwrites to force compactions.
	big := bytes.Repeat([]byte("v"), 4096)
	for range 600 {
		if err := s.PutMeta("offsets/hot", big); err != nil {
			t.Fatal(err)
		}
	}
	check := func(s *Store) {
		t.Helper()
		groups := s.ListMeta("group/")
		if len(groups) != 49 {
			t.Fatalf("%d groups, want 49", len(groups))
		}
		if _, ok := groups["group/g7"]; ok {
			t.Fatal("deleted key listed")
		}
		if v, _ := s.GetMeta("group/g9"); !bytes.Equal(v, []byte{9}) {
			t.Fatalf("group/g9 = %v", v)
		}
		if v, _ := s.GetMeta("offsets/hot"); !bytes.Equal(v, big) {
			t.Fatal("hot key lost")
		}
	}
	check(s)
	if s.meta.gen == 0 {
		t.Fatal("the journal was never compacted")
	}
	if s.meta.sizeBytes() > 2<<20 {
		t.Fatalf("journal is %d bytes after compaction", s.meta.sizeBytes())
	}
	groups := s.ListMeta("group/")
	groups["group/g1"][0] = 99 // ListMeta returns a copy
	s.Close()
	s = openStore(t, dir, opts)
	check(s)
	if v, _ := s.GetMeta("group/g1"); v[0] != 1 {
		t.Fatal("ListMeta leaked its internal map")
	}
}

func TestClosedStoreRefusesCalls(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "k1")}})
	p := mustPartition(t, s, "p")
	appendN(t, p, 1, 10, 1)
	s.Close()
	ctx := context.Background()
	calls := map[string]error{
		"Append":    func() error { _, err := p.Append(ctx, BatchMeta{Records: 1}, nil); return err }(),
		"Read":      func() error { _, err := p.Read(ctx, 0, 100); return err }(),
		"PutMeta":   s.PutMeta("k", nil),
		"Partition": func() error { _, err := s.Partition("p", false); return err }(),
		"Reencrypt": s.ReencryptTo(ctx, newDEK(t, "k2"), nil),
	}
	for name, err := range calls {
		if !errs.Is(errs.Conflict, err) {
			t.Errorf("%s after Close: %v, want conflict", name, err)
		}
	}
	select {
	case <-p.Changed():
	default:
		t.Error("Changed is not closed after Close")
	}
}

func TestInvalidInputIsRefused(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir, Options{StoreID: "d"}); !errs.Is(errs.Invalid, err) {
		t.Errorf("no keys: %v", err)
	}
	if _, err := Open(dir, Options{StoreID: "d", Keys: []*DEK{{ID: "k", Key: make([]byte, 16)}}}); !errs.Is(errs.Invalid, err) {
		t.Errorf("short key: %v", err)
	}
	s := openStore(t, dir, Options{Keys: []*DEK{newDEK(t, "k1")}})
	for _, name := range []string{"", "../x", "a/b", "a b", "é"} {
		if _, err := s.Partition(name, true); !errs.Is(errs.Invalid, err) {
			t.Errorf("Partition(%q): %v", name, err)
		}
	}
	if _, err := s.Partition("missing", false); !errs.Is(errs.NotExist, err) {
		t.Errorf("missing partition: %v", err)
	}
	p := mustPartition(t, s, "p")
	if _, err := p.Append(context.Background(), BatchMeta{Records: 0}, []byte("x")); !errs.Is(errs.Invalid, err) {
		t.Errorf("zero records: %v", err)
	}
	if _, err := Open(dir, Options{StoreID: "d", Keys: []*DEK{newDEK(t, "k1")}}); !errs.Is(errs.Conflict, err) {
		t.Errorf("second open of a locked dir: %v", err)
	}
}

func TestDropPartition(t *testing.T) {
	dir := t.TempDir()
	opts := Options{StoreID: "dep-1", Keys: []*DEK{newDEK(t, "k1")}}
	s := openStore(t, dir, opts)
	p := mustPartition(t, s, "gone")
	appendN(t, p, 3, 10, 1)
	p.DeleteBefore(2)
	mustPartition(t, s, "kept")
	segPath := filepath.Join(dir, "p", "gone", segmentName(0))
	oldBlocks, err := os.ReadFile(segPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DropPartition("gone"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Append(context.Background(), BatchMeta{Records: 1}, nil); !errs.Is(errs.NotExist, err) {
		t.Fatalf("append to dropped partition: %v", err)
	}
	if got := s.Partitions(); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("Partitions = %v", got)
	}
	s.Close()
	s = openStore(t, dir, opts)
	if got := s.Partitions(); !slices.Equal(got, []string{"kept"}) {
		t.Fatalf("Partitions after reopen = %v", got)
	}
	p = mustPartition(t, s, "gone")
	if p.StartOffset() != 0 || p.EndOffset() != 0 {
		t.Fatalf("re-created partition at [%d,%d), want a fresh log", p.StartOffset(), p.EndOffset())
	}
	// The dropped partition's blocks do not open in its successor.
	s.Close()
	os.WriteFile(segPath, oldBlocks, 0o600)
	if _, err := Open(dir, opts); !errs.Is(errs.Unprocessable, err) {
		t.Fatalf("Open with a dropped partition's blocks put back: %v", err)
	}
}

func TestRetention(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	tests := []struct {
		name          string
		ms, bytes     int64
		deleteBefore  int64
		wantStart     int64
		wantSegsAtMax int
	}{
		{name: "unlimited keeps everything", ms: -1, bytes: -1, wantStart: 0},
		{name: "time deletes segments whose newest batch is too old", ms: 1_000_000 - 50, bytes: -1, wantStart: 50},
		{name: "time never deletes the active segment", ms: 0, bytes: -1, wantStart: 90},
		{name: "bytes keeps at least the limit", ms: -1, bytes: 1, wantStart: 90},
		{name: "explicit log start inside a segment", ms: -1, bytes: -1, deleteBefore: 55, wantStart: 55},
		{name: "explicit log start at the end", ms: -1, bytes: -1, deleteBefore: 100, wantStart: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			opts := Options{StoreID: "dep-1", Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 1}
			s := openStore(t, dir, opts)
			p := mustPartition(t, s, "p")
			// SegmentBytes 1: each batch of 10 offsets in its own segment;
			// batch at base b has MaxTimestamp b+1.
			appendN(t, p, 10, 50, 10)
			if tt.deleteBefore > 0 {
				if err := p.DeleteBefore(tt.deleteBefore); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Retain(now, tt.ms, tt.bytes); err != nil {
				t.Fatal(err)
			}
			check := func(p *Partition) {
				t.Helper()
				if p.StartOffset() != tt.wantStart || p.EndOffset() != 100 {
					t.Fatalf("log [%d,%d), want [%d,100)", p.StartOffset(), p.EndOffset(), tt.wantStart)
				}
				if _, err := p.Read(context.Background(), tt.wantStart-1, 100); tt.wantStart > 0 && !errs.Is(errs.Invalid, err) {
					t.Fatalf("read below start: %v", err)
				}
				if tt.wantStart < 100 {
					bs := readAllBatches(t, p)
					checkBatches(t, bs, tt.wantStart/10*10, 50)
				}
			}
			check(p)
			files, _ := filepath.Glob(filepath.Join(dir, "p", "p", "*.log"))
			if want := 10 - int(tt.wantStart/10) + 1; tt.wantStart > 0 && len(files) > want {
				t.Fatalf("%d segment files remain, want at most %d", len(files), want)
			}
			s.Close()
			s = openStore(t, dir, opts)
			p, _ = s.Partition("p", false)
			check(p)
			appendN(t, p, 1, 50, 1)
		})
	}
	t.Run("offset past the end is refused", func(t *testing.T) {
		s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "k1")}})
		p := mustPartition(t, s, "p")
		appendN(t, p, 1, 10, 1)
		if err := p.DeleteBefore(5); !errs.Is(errs.Invalid, err) {
			t.Fatalf("DeleteBefore past end: %v", err)
		}
	})
}

func TestWrongKeyIsRefused(t *testing.T) {
	dir := t.TempDir()
	key := newDEK(t, "k1")
	s := openStore(t, dir, Options{Keys: []*DEK{key}})
	p := mustPartition(t, s, "p")
	appendN(t, p, 5, 100, 1)
	s.PutMeta("k", []byte("v"))
	s.Close()
	sizeBefore := dirSize(t, dir)

	wrong := &DEK{ID: "k1", Key: bytes.Repeat([]byte{7}, 32)}
	cases := map[string]Options{
		"same ID, other bytes": {StoreID: "dep-1", Keys: []*DEK{wrong}},
		"other ID only":        {StoreID: "dep-1", Keys: []*DEK{newDEK(t, "k9")}},
		"other store ID":       {StoreID: "dep-2", Keys: []*DEK{key}},
		"unsealed":             {StoreID: "dep-1", Unsealed: true},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := Open(dir, opts)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errs.Is(errs.Unprocessable, err) {
				t.Fatalf("err = %v, want unprocessable", err)
			}
		})
	}
	if dirSize(t, dir) < sizeBefore {
		t.Fatal("a refused open cut data")
	}
	s = openStore(t, dir, Options{Keys: []*DEK{key}})
	p, _ = s.Partition("p", false)
	checkBatches(t, readAllBatches(t, p), 0, 100)
	if p.EndOffset() != 5 {
		t.Fatalf("end %d after refused opens, want 5", p.EndOffset())
	}
}

func dirSize(t testing.TB, dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// TestSyncedAppendsShareFsyncs holds the first fsync until every other
// writer is waiting: all of them must then be served by one more round.
func TestSyncedAppendsShareFsyncs(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "k1")}, Sync: true})
	parts := []*Partition{mustPartition(t, s, "a"), mustPartition(t, s, "b")}
	g := s.commit
	before := g.next // creating the partitions synced their records
	release := make(chan struct{})
	var syncs atomic.Int64
	g.sync = func(f *os.File) error {
		if syncs.Add(1) == 1 {
			<-release
		}
		return f.Sync()
	}
	const writers = 8
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			if _, err := parts[w%2].Append(context.Background(), BatchMeta{Records: 1}, []byte("x")); err != nil {
				t.Error(err)
			}
		})
	}
	for {
		g.mu.Lock()
		n := g.waiting
		g.mu.Unlock()
		if n == writers {
			break
		}
		runtime.Gosched()
	}
	close(release)
	wg.Wait()
	g.mu.Lock()
	rounds := g.next - before
	g.mu.Unlock()
	if rounds != 2 {
		t.Fatalf("%d fsync rounds for %d synced appends, want 2", rounds, writers)
	}
	if n := syncs.Load(); n > 3 {
		t.Fatalf("%d fsyncs for 2 partitions in 2 rounds", n)
	}
	for _, p := range parts {
		if p.EndOffset() != writers/2 {
			t.Fatalf("%s ends at %d", p.name, p.EndOffset())
		}
	}
}

// TestInterruptedCompactionKeepsTheJournal leaves behind what a compaction
// that died mid-write leaves: a partial side file of the next generation.
func TestInterruptedCompactionKeepsTheJournal(t *testing.T) {
	dir := t.TempDir()
	opts := Options{StoreID: "dep-1", Keys: []*DEK{newDEK(t, "k1")}}
	s := openStore(t, dir, opts)
	s.PutMeta("group/a", []byte("1"))
	s.PutMeta("group/b", []byte("2"))
	s.Close()
	journal, _ := os.ReadFile(filepath.Join(dir, journalName(0)))
	side := filepath.Join(dir, journalName(1)+rewriteExt)
	os.WriteFile(side, journal[:len(journal)/2], 0o600)

	s = openStore(t, dir, opts)
	if got := s.ListMeta("group/"); len(got) != 2 {
		t.Fatalf("ListMeta = %v after an interrupted compaction", got)
	}
	if _, err := os.Stat(side); !os.IsNotExist(err) {
		t.Fatalf("side file left: %v", err)
	}
	if err := s.meta.compact(s.keys.Load()); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir, opts)
	if got := s.ListMeta("group/"); len(got) != 2 || s.meta.gen != 1 {
		t.Fatalf("after compaction: gen %d, %v", s.meta.gen, got)
	}
	if _, err := os.Stat(filepath.Join(dir, journalName(0))); !os.IsNotExist(err) {
		t.Fatal("old generation left")
	}
}

// TestSealedSegmentEntriesAreLoadedOnDemand checks that memory does not
// grow with the log: sealed segments' entries are read from their index
// when needed, a few are cached, and a lost index is rebuilt from the
// segment itself.
func TestSealedSegmentEntriesAreLoadedOnDemand(t *testing.T) {
	dir := t.TempDir()
	opts := Options{StoreID: "dep-1", Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 1024}
	s := openStore(t, dir, opts)
	appendN(t, mustPartition(t, s, "p"), 60, 300, 1)
	s.Close()

	s = openStore(t, dir, opts)
	p, _ := s.Partition("p", false)
	cached := func() int {
		n := 0
		for _, seg := range p.segs[:len(p.segs)-1] {
			if seg.cached.Load() != nil {
				n++
			}
		}
		return n
	}
	if len(p.segs) < 20 || cached() != 0 {
		t.Fatalf("%d segments, %d with entries in memory after open", len(p.segs), cached())
	}
	checkBatches(t, readAllBatches(t, p), 0, 300)
	if n := cached(); n == 0 || n > cachedSegments {
		t.Fatalf("%d sealed segments hold entries after a full read, want 1..%d", n, cachedSegments)
	}
	lost := p.segs[2]
	lost.cached.Store(nil)
	os.Remove(filepath.Join(dir, "p", "p", indexName(lost.base)))
	bs, err := p.Read(context.Background(), lost.base, 1)
	if err != nil || len(bs) != 1 || bs[0].Meta.BaseOffset != lost.base {
		t.Fatalf("Read from a segment whose index is gone: %v", err)
	}
	if got := p.OffsetForTimestamp(lost.base + 1); got != lost.base {
		t.Fatalf("OffsetForTimestamp = %d, want %d", got, lost.base)
	}
	if got := p.Tail(60); len(got) != 60 || got[0].BaseOffset != 0 {
		t.Fatalf("Tail(60) has %d headers", len(got))
	}
}

// TestLogResumesAtItsStartAfterLosingUnsyncedTail simulates a crash that
// kept a synced DeleteBefore but lost the unsynced batches it passed.
func TestLogResumesAtItsStartAfterLosingUnsyncedTail(t *testing.T) {
	dir := t.TempDir()
	opts := Options{StoreID: "dep-1", Keys: []*DEK{newDEK(t, "k1")}}
	s := openStore(t, dir, opts)
	p := mustPartition(t, s, "p")
	appendN(t, p, 4, 10, 5) // offsets 0..19 in segment 0
	if err := p.DeleteBefore(12); err != nil {
		t.Fatal(err)
	}
	s.Close()
	os.Truncate(filepath.Join(dir, "p", "p", segmentName(0)), int64(p.segs[0].size)/4) // loses the tail

	s = openStore(t, dir, opts)
	p, _ = s.Partition("p", false)
	if p.StartOffset() != 12 || p.EndOffset() != 12 {
		t.Fatalf("log [%d,%d), want [12,12)", p.StartOffset(), p.EndOffset())
	}
	base, err := p.Append(context.Background(), BatchMeta{Records: 1}, []byte("x"))
	if err != nil || base != 12 {
		t.Fatalf("Append = %d, %v; want 12", base, err)
	}
}
