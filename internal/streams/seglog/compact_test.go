package seglog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// The tests' batch format: records of offset delta (4), key length (1),
// key, value length (2, 0xffff for a tombstone) and value.
type testRecord struct {
	key, value string
	tombstone  bool
}

func encodeTestRecord(b []byte, delta int, r testRecord) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(delta))
	b = append(b, byte(len(r.key)))
	b = append(b, r.key...)
	if r.tombstone {
		return binary.BigEndian.AppendUint16(b, 0xffff)
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.value)))
	return append(b, r.value...)
}

func testRecords(m BatchMeta, data []byte) ([]Record, bool, error) {
	var out []Record
	for len(data) > 0 {
		if len(data) < 5 || len(data) < 5+int(data[4])+2 {
			return nil, false, errors.New("short record")
		}
		kl := int(data[4])
		r := Record{Offset: m.BaseOffset + int64(binary.BigEndian.Uint32(data)), Timestamp: m.MaxTimestamp, Key: data[5 : 5+kl]}
		vl := binary.BigEndian.Uint16(data[5+kl:])
		n := 5 + kl + 2
		if vl == 0xffff {
			r.Tombstone = true
		} else {
			n += int(vl)
		}
		if len(data) < n {
			return nil, false, errors.New("short record")
		}
		r.Raw, data = data[:n], data[n:]
		out = append(out, r)
	}
	return out, false, nil
}

func testRebuild(_ BatchMeta, _ []byte, keep []Record) ([]byte, error) {
	var b []byte
	for _, r := range keep {
		b = append(b, r.Raw...)
	}
	return b, nil
}

func testCompaction(now time.Time) Compaction {
	return Compaction{Now: now, MinDirtyRatio: 0.5, DeleteRetentionMs: time.Hour.Milliseconds(), Records: testRecords, Rebuild: testRebuild}
}

// appendRecords appends one batch of recs; a value is "value-<offset>" so
// a reader can check every record kept its offset.
func appendRecords(t testing.TB, p *Partition, ts int64, pid int64, recs ...testRecord) {
	t.Helper()
	base := p.EndOffset()
	var data []byte
	for i, r := range recs {
		if !r.tombstone {
			r.value = fmt.Sprintf("value-%d", base+int64(i))
		}
		data = encodeTestRecord(data, i, r)
	}
	if _, err := p.Append(context.Background(), BatchMeta{Records: int32(len(recs)), FirstTimestamp: ts, MaxTimestamp: ts, ProducerID: pid}, data); err != nil {
		t.Fatal(err)
	}
}

// keyedLog writes n batches of two records over keys key-0..key-<keys-1>.
func keyedLog(t testing.TB, p *Partition, n, keys int, ts int64) {
	t.Helper()
	for i := range n {
		appendRecords(t, p, ts, -1, testRecord{key: fmt.Sprintf("key-%d", (2*i)%keys)}, testRecord{key: fmt.Sprintf("key-%d", (2*i+1)%keys)})
	}
}

// logRecords reads the partition and returns offset -> record, checking
// that every value names its own offset.
func logRecords(t testing.TB, p *Partition) map[int64]testRecord {
	t.Helper()
	out := map[int64]testRecord{}
	for _, b := range readAllBatches(t, p) {
		recs, _, err := testRecords(b.Meta, b.Data)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			if r.Offset > b.Meta.LastOffset() {
				t.Fatalf("record %d beyond its batch's last offset %d", r.Offset, b.Meta.LastOffset())
			}
			tr := testRecord{key: string(r.Key), tombstone: r.Tombstone}
			if !r.Tombstone {
				v := r.Raw[5+len(r.Key)+2:]
				if tr.value = string(v); tr.value != fmt.Sprintf("value-%d", r.Offset) {
					t.Fatalf("record at %d holds %q: offsets moved", r.Offset, v)
				}
			}
			out[r.Offset] = tr
		}
	}
	return out
}

// compacted is what a log cleaned up to end holds: each key's newest record
// below end, and everything from end on.
func compacted(all map[int64]testRecord, end int64) map[int64]testRecord {
	newest := map[string]int64{}
	for off, r := range all {
		if off < end && off >= newest[r.key] {
			newest[r.key] = off
		}
	}
	out := map[int64]testRecord{}
	for off, r := range all {
		if off >= end || newest[r.key] == off {
			out[off] = r
		}
	}
	return out
}

func sealedEnd(p *Partition) int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.active().base
}

func TestCompactionKeepsEachKeysNewestRecord(t *testing.T) {
	dir := t.TempDir()
	key := newDEK(t, "k1")
	s := openStore(t, dir, Options{Keys: []*DEK{key}, SegmentBytes: 1024})
	p := mustPartition(t, s, "p")
	now := time.Now()
	keyedLog(t, p, 200, 5, now.Add(-time.Minute).UnixMilli())
	before := logRecords(t, p)
	sizeBefore := p.SizeBytes()

	st, err := p.Compact(context.Background(), testCompaction(now))
	if err != nil {
		t.Fatal(err)
	}
	end := sealedEnd(p)
	if st.Checkpoint != end || st.Segments == 0 || st.Removed == 0 || st.WrittenBytes >= st.ReadBytes {
		t.Fatalf("pass did %+v; want every sealed segment (up to %d) cleaned", st, end)
	}
	want := compacted(before, end)
	if got := logRecords(t, p); !maps.Equal(got, want) {
		t.Fatalf("after compaction %d records, want %d: %v", len(got), len(want), got)
	}
	if p.SizeBytes() >= sizeBefore/2 || p.EndOffset() != 400 || p.StartOffset() != 0 {
		t.Fatalf("size %d of %d, end %d, start %d", p.SizeBytes(), sizeBefore, p.EndOffset(), p.StartOffset())
	}
	// Offsets in the gaps read from the next record kept.
	if bs, err := p.Read(context.Background(), 1, 1); err != nil || len(bs) == 0 || bs[0].Meta.LastOffset() < 1 {
		t.Fatalf("Read in a gap: %v %v", bs, err)
	}

	// A second pass finds nothing dirty; appending more makes it clean again.
	if st, err := p.Compact(context.Background(), testCompaction(now)); err != nil || st.Segments != 0 {
		t.Fatalf("second pass %+v, %v; want nothing to do", st, err)
	}

	s.Close()
	s = openStore(t, dir, Options{Keys: []*DEK{key}, SegmentBytes: 1024})
	p = mustPartition(t, s, "p")
	if got := logRecords(t, p); !maps.Equal(got, want) {
		t.Fatalf("after reopen %d records, want %d", len(got), len(want))
	}
	appendRecords(t, p, now.UnixMilli(), -1, testRecord{key: "key-1"})
	if got := logRecords(t, p); got[400].key != "key-1" || len(got) != len(want)+1 {
		t.Fatalf("append after a compacted reopen: %v", got[400])
	}
	scanForPlaintext(t, dir, "value-", "key-")
}

// scanForPlaintext fails if any file under dir holds one of words.
func scanForPlaintext(t *testing.T, dir string, words ...string) {
	t.Helper()
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, w := range words {
			if bytes.Contains(b, []byte(w)) {
				t.Errorf("%s holds %q in plain", path, w)
			}
		}
		return nil
	})
}

func TestCompactionTombstonesOutliveDeleteRetention(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 512})
	p := mustPartition(t, s, "p")
	now := time.Now()
	ts := now.Add(-time.Minute).UnixMilli()
	keyedLog(t, p, 20, 2, ts)
	appendRecords(t, p, ts, -1, testRecord{key: "key-0", tombstone: true})
	for range 10 { // only key-1 from here: key-0's tombstone is its newest record
		appendRecords(t, p, ts, -1, testRecord{key: "key-1"}, testRecord{key: "key-1"})
	}
	tomb := int64(40)

	c := testCompaction(now)
	c.MinDirtyRatio = 0
	if _, err := p.Compact(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	got := logRecords(t, p)
	if r, ok := got[tomb]; !ok || !r.tombstone {
		t.Fatalf("a tombstone younger than delete.retention.ms is gone: %v", got)
	}
	for off, r := range got {
		if r.key == "key-0" && off != tomb {
			t.Fatalf("key-0's value at %d survived its tombstone", off)
		}
	}

	// An hour on, with more to clean, the tombstone goes too.
	for range 11 {
		appendRecords(t, p, now.UnixMilli(), -1, testRecord{key: "key-1"}, testRecord{key: "key-1"})
	}
	c.Now = now.Add(time.Hour + time.Minute)
	if _, err := p.Compact(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	for off, r := range logRecords(t, p) {
		if r.key == "key-0" {
			t.Fatalf("key-0 still has a record at %d after delete.retention.ms", off)
		}
	}
}

func TestCompactionWaitsForDirtRatioAndLag(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 1024})
	p := mustPartition(t, s, "p")
	now := time.Now()
	keyedLog(t, p, 100, 4, now.UnixMilli())

	c := testCompaction(now)
	c.MinLagMs = time.Minute.Milliseconds()
	if st, err := p.Compact(context.Background(), c); err != nil || st.Segments != 0 {
		t.Fatalf("records younger than min.compaction.lag.ms were cleaned: %+v %v", st, err)
	}
	c.MinLagMs = 0
	if st, err := p.Compact(context.Background(), c); err != nil || st.Segments == 0 {
		t.Fatalf("nothing cleaned: %+v %v", st, err)
	}
	keyedLog(t, p, 10, 4, now.UnixMilli())
	c.MinDirtyRatio = 0.99
	if st, err := p.Compact(context.Background(), c); err != nil || st.Segments != 0 {
		t.Fatalf("cleaned below min.cleanable.dirty.ratio: %+v %v", st, err)
	}
}

func TestCompactionWithABoundedKeyMapCleansInSteps(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 1024})
	p := mustPartition(t, s, "p")
	now := time.Now()
	for i := range 100 {
		appendRecords(t, p, now.UnixMilli(), -1, testRecord{key: fmt.Sprintf("key-%d", i/4)}, testRecord{key: fmt.Sprintf("key-%d", i/4)})
	}
	before := logRecords(t, p)
	c := testCompaction(now)
	c.MinDirtyRatio, c.MaxKeys = 0, 3
	var checkpoints []int64
	for p.CleanerCheckpoint() < sealedEnd(p) && len(checkpoints) < 100 {
		st, err := p.Compact(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		checkpoints = append(checkpoints, st.Checkpoint)
	}
	if len(checkpoints) < 5 || !slices.IsSorted(checkpoints) {
		t.Fatalf("checkpoints %v: want several passes, each a step on", checkpoints)
	}
	if got, want := logRecords(t, p), compacted(before, sealedEnd(p)); !maps.Equal(got, want) {
		t.Fatalf("%d records after stepwise cleaning, want %d", len(got), len(want))
	}
}

func TestCompactionKeepsAProducersNewestBatch(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 4096})
	p := mustPartition(t, s, "p")
	now := time.Now().UnixMilli()
	appendRecords(t, p, now, 7, testRecord{key: "a"}, testRecord{key: "b"})
	keyedLog(t, p, 3, 1, now)
	for p.SizeBytes() < 4096 {
		appendRecords(t, p, now, -1, testRecord{key: "a"}, testRecord{key: "b"})
	}
	appendRecords(t, p, now, -1, testRecord{key: "a"}) // rolls
	c := testCompaction(time.Now())
	if _, err := p.Compact(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	bs := readAllBatches(t, p)
	if bs[0].Meta.BaseOffset != 0 || bs[0].Meta.ProducerID != 7 || len(bs[0].Data) != 0 || bs[0].Meta.Records != 2 {
		t.Fatalf("first batch %+v (%d bytes); want producer 7's batch kept empty over its offsets", bs[0].Meta, len(bs[0].Data))
	}
	if bs[1].Meta.BaseOffset == 2 {
		t.Fatal("a batch whose records were all superseded was kept")
	}
}

// TestCompactionSurvivesACrashMidSwap stops a pass where a crash could:
// after the side files are written, and between the segment's rename and
// its index's. The store reopens to whole segments, old or new.
func TestCompactionSurvivesACrashMidSwap(t *testing.T) {
	for _, stage := range []string{"written", "renamed"} {
		t.Run(stage, func(t *testing.T) {
			dir := t.TempDir()
			key := newDEK(t, "k1")
			s := openStore(t, dir, Options{Keys: []*DEK{key}, SegmentBytes: 1024})
			p := mustPartition(t, s, "p")
			now := time.Now()
			keyedLog(t, p, 100, 3, now.UnixMilli())
			before := logRecords(t, p)

			crash := errors.New("crash")
			rewriteHook = func(s string) error {
				if s == stage {
					return crash
				}
				return nil
			}
			_, err := p.Compact(context.Background(), testCompaction(now))
			rewriteHook = nil
			if err == nil {
				t.Fatal("the pass went on after the crash")
			}
			s.Close()

			s = openStore(t, dir, Options{Keys: []*DEK{key}, SegmentBytes: 1024})
			p = mustPartition(t, s, "p")
			left, _ := filepath.Glob(filepath.Join(dir, "p", "*", "*"+rewriteExt))
			if len(left) != 0 {
				t.Fatalf("side files left after reopen: %v", left)
			}
			got := logRecords(t, p)
			for off, r := range got {
				if before[off] != r {
					t.Fatalf("record %d is %v after the crash, was %v", off, r, before[off])
				}
			}
			for off, r := range before {
				if _, ok := got[off]; !ok && off >= 100 {
					t.Fatalf("record %d (%v) lost beyond the first segment", off, r)
				}
			}
			if _, err := p.Compact(context.Background(), testCompaction(now)); err != nil {
				t.Fatal(err)
			}
			if got, want := logRecords(t, p), compacted(before, sealedEnd(p)); !maps.Equal(got, want) {
				t.Fatalf("%d records after compacting the recovered log, want %d", len(got), len(want))
			}
		})
	}
}

// TestCompactionDuringReencryption runs passes while the key rotates: the
// two take turns, so nothing is lost and nothing stays under the old key.
func TestCompactionDuringReencryption(t *testing.T) {
	dir := t.TempDir()
	oldKey, newKey := newDEK(t, oldKeyID), newDEK(t, newKeyID)
	s := openStore(t, dir, Options{Keys: []*DEK{oldKey}, SegmentBytes: 1024})
	var parts []*Partition
	for i := range 3 {
		p := mustPartition(t, s, fmt.Sprintf("p%d", i))
		keyedLog(t, p, 300, 7, time.Now().UnixMilli())
		parts = append(parts, p)
	}
	befores := make([]map[int64]testRecord, len(parts))
	for i, p := range parts {
		befores[i] = logRecords(t, p)
	}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	for _, p := range parts {
		wg.Go(func() {
			c := testCompaction(time.Now())
			c.MinDirtyRatio = 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := p.Compact(context.Background(), c); err != nil {
					t.Errorf("Compact during re-encryption: %v", err)
					return
				}
				keyedLog(t, p, 5, 7, time.Now().UnixMilli())
			}
		})
	}
	err := s.ReencryptTo(context.Background(), newKey, nil)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range parts {
		got := logRecords(t, p)
		if _, err := p.Compact(context.Background(), Compaction{Now: time.Now(), Records: testRecords, Rebuild: testRebuild}); err != nil {
			t.Fatal(err)
		}
		// Every key's newest record before the rotation is still there or
		// superseded by a newer one.
		for off, r := range compacted(befores[i], 600) {
			if _, ok := got[off]; !ok && !slices.ContainsFunc(slices.Collect(maps.Keys(got)), func(o int64) bool { return o > off && got[o].key == r.key }) {
				t.Fatalf("%s lost %v at %d", p.name, r, off)
			}
		}
	}
	// New passes seal under the new key; the old key is gone from disk.
	assertOnlyKey(t, s, dir)
	s.Close()
	s = openStore(t, dir, Options{Keys: []*DEK{newKey}, SegmentBytes: 1024})
	for i := range parts {
		logRecords(t, mustPartition(t, s, fmt.Sprintf("p%d", i)))
	}
	if names := s.Partitions(); len(names) != 3 || !strings.HasPrefix(names[0], "p") {
		t.Fatalf("partitions %v", names)
	}
}

func TestAppendAtLeavesAGapAndRefusesGoingBack(t *testing.T) {
	dir := t.TempDir()
	key := newDEK(t, "k1")
	s := openStore(t, dir, Options{Keys: []*DEK{key}})
	p := mustPartition(t, s, "p")
	ctx := context.Background()
	m := BatchMeta{Records: 2, ProducerID: -1}
	for _, at := range []int64{0, 10} {
		m.BaseOffset = at
		if got, err := p.AppendAt(ctx, m, []byte("x")); err != nil || got != at {
			t.Fatalf("AppendAt(%d) = %d, %v", at, got, err)
		}
	}
	m.BaseOffset = 11
	if _, err := p.AppendAt(ctx, m, []byte("x")); err == nil {
		t.Fatal("AppendAt below the end succeeded")
	}
	s.Close()
	p = mustPartition(t, openStore(t, dir, Options{Keys: []*DEK{key}}), "p")
	bs := readAllBatches(t, p)
	if len(bs) != 2 || bs[1].Meta.BaseOffset != 10 || p.EndOffset() != 12 {
		t.Fatalf("after reopen: %+v, end %d", bs, p.EndOffset())
	}
}

// TestCompactionStopsOnCancelAndClose: a canceled pass or a closed store
// leaves the log as it was.
func TestCompactionStopsOnCancelAndClose(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 1024})
	p := mustPartition(t, s, "p")
	now := time.Now()
	keyedLog(t, p, 100, 3, now.UnixMilli())
	before := logRecords(t, p)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.Compact(ctx, testCompaction(now)); err == nil {
		t.Fatal("a canceled pass succeeded")
	}
	if got := logRecords(t, p); !maps.Equal(got, before) || p.CleanerCheckpoint() != 0 {
		t.Fatalf("a canceled pass changed the log (checkpoint %d)", p.CleanerCheckpoint())
	}
	s.Close()
	if _, err := p.Compact(context.Background(), testCompaction(now)); err == nil {
		t.Fatal("a pass on a closed store succeeded")
	}
}
