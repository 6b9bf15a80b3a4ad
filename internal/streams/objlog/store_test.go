package objlog_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/streams/objlog"
	"github.com/keyline/keyline/internal/streams/seglog"
)

func batchMeta(records int32, ts int64, producer int64, seq int32) seglog.BatchMeta {
	return seglog.BatchMeta{Records: records, FirstTimestamp: ts, MaxTimestamp: ts, ProducerID: producer, ProducerEpoch: 3, BaseSequence: seq}
}

func mustAppend(t *testing.T, p *objlog.Partition, m seglog.BatchMeta, data []byte) int64 {
	t.Helper()
	base, durable, err := p.AppendAsync(context.Background(), m, data)
	if err != nil {
		t.Fatal(err)
	}
	if err := durable(); err != nil {
		t.Fatal(err)
	}
	return base
}

// readAll reads a partition from its start, checking Read and ReadAppend
// agree, and returns each batch's bytes by base offset.
func readAll(t *testing.T, p *objlog.Partition) map[int64][]byte {
	t.Helper()
	got := map[int64][]byte{}
	for off := p.StartOffset(); off < p.EndOffset(); {
		bs, err := p.Read(context.Background(), off, 64<<10)
		if err != nil {
			t.Fatal(err)
		}
		_, data, metas, err := p.ReadAppend(context.Background(), off, 64<<10, []byte("prefix"))
		if err != nil {
			t.Fatal(err)
		}
		if len(bs) == 0 || len(metas) != len(bs) {
			t.Fatalf("read from %d: %d batches, ReadAppend %d", off, len(bs), len(metas))
		}
		pos := 0
		for i, b := range bs {
			if metas[i] != b.Meta || !bytes.Equal(data[pos:pos+int(b.Meta.Size)], b.Data) {
				t.Fatalf("ReadAppend differs from Read at %d", b.Meta.BaseOffset)
			}
			pos += int(b.Meta.Size)
			got[b.Meta.BaseOffset] = b.Data
			off = b.Meta.LastOffset() + 1
		}
	}
	return got
}

func TestAppendsAreBatchedIntoObjectsAndReadBackAfterReopen(t *testing.T) {
	e := newEnv(t)
	st := e.mustOpen(t, func(o *objlog.Options) { o.FlushWindow = 20 * time.Millisecond })
	parts := []string{"topicid1-0", "topicid1-1"}
	const writers, each = 16, 25
	want := map[string]map[int64][]byte{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			name := parts[w%2]
			p, err := st.Partition(name, true)
			if err != nil {
				t.Error(err)
				return
			}
			for i := range each {
				data := fmt.Appendf(nil, "writer %d batch %d %s", w, i, bytes.Repeat([]byte{'x'}, w*10))
				base, durable, err := p.AppendAsync(context.Background(), batchMeta(int32(1+i%3), int64(1000+i), int64(w), int32(i)), data)
				if err == nil {
					err = durable()
				}
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if want[name] == nil {
					want[name] = map[int64][]byte{}
				}
				want[name][base] = data
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	batches := writers * each
	if n := len(e.objects(t)); n == 0 || n > batches/2 {
		t.Fatalf("%d batches went into %d objects; want them batched into at most %d", batches, n, batches/2)
	}
	check := func(st *objlog.Store) {
		t.Helper()
		for _, name := range parts {
			p, err := st.Partition(name, false)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, p)
			if len(got) != len(want[name]) {
				t.Fatalf("%s: read %d batches, appended %d", name, len(got), len(want[name]))
			}
			var size int64
			for base, data := range want[name] {
				if !bytes.Equal(got[base], data) {
					t.Fatalf("%s: batch at %d reads %q, want %q", name, base, got[base], data)
				}
				size += int64(len(data))
			}
			if p.SizeBytes() != size {
				t.Fatalf("%s: SizeBytes %d, want %d", name, p.SizeBytes(), size)
			}
		}
	}
	check(st)
	p0, _ := st.Partition(parts[0], false)
	end, tail := p0.EndOffset(), p0.Tail(3)
	if len(tail) != 3 || tail[2].LastOffset() != end-1 || tail[2].ProducerEpoch != 3 {
		t.Fatalf("Tail(3) = %+v, end %d", tail, end)
	}
	if err := st.PutMeta("topic/canary-name", []byte("config")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	if _, _, err := p0.AppendAsync(context.Background(), batchMeta(1, 1, -1, 0), []byte("late")); errs.As(err) == nil || errs.As(err).Code != objlog.CodeClosed {
		t.Fatalf("append after Close = %v, want %s", err, objlog.CodeClosed)
	}

	st2 := e.mustOpen(t)
	check(st2)
	p0, _ = st2.Partition(parts[0], false)
	if p0.EndOffset() != end || fmt.Sprint(p0.Tail(3)) != fmt.Sprint(tail) {
		t.Fatalf("after reopening: end %d tail %+v, want %d %+v", p0.EndOffset(), p0.Tail(3), end, tail)
	}
	if v, ok := st2.GetMeta("topic/canary-name"); !ok || string(v) != "config" {
		t.Fatalf("GetMeta after reopening = %q %v", v, ok)
	}
	if l := st2.ListMeta("topic/"); len(l) != 1 {
		t.Fatalf("ListMeta after reopening = %v", l)
	}
	if base := mustAppend(t, p0, batchMeta(2, 5000, -1, 0), []byte("after reopen")); base != end {
		t.Fatalf("first append after reopening at %d, want %d", base, end)
	}
}

func TestAnotherKeyIsRefused(t *testing.T) {
	e := newEnv(t)
	st := e.mustOpen(t)
	if err := st.PutMeta("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	st.Close()
	_, err := e.open(t, testDEK("dek-2", 9))
	if ee := errs.As(err); ee == nil || ee.Code != objlog.CodeKeyMismatch {
		t.Fatalf("open with another DEK = %v, want %s", err, objlog.CodeKeyMismatch)
	}
	// A new sealing key is taken only beside the key that sealed the store.
	_, err = objlog.Open(context.Background(), e.db, e.bucket, objlog.Options{StoreID: "dep1", Keys: []*seglog.DEK{testDEK("dek-2", 9), testDEK("dek-1", 8)}})
	if ee := errs.As(err); ee == nil || ee.Code != objlog.CodeKeyMismatch {
		t.Fatalf("open with a new DEK and a wrong old one = %v, want %s", err, objlog.CodeKeyMismatch)
	}
}

func TestRetentionAndDeletionRemoveObjects(t *testing.T) {
	e := newEnv(t)
	st := e.mustOpen(t)
	p, err := st.Partition("topicid2-0", true)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	var bases []int64
	for i := range 6 {
		// One durable append at a time: one object each.
		ts := now.Add(time.Duration(i-6) * time.Hour).UnixMilli()
		bases = append(bases, mustAppend(t, p, batchMeta(2, ts, -1, 0), fmt.Appendf(nil, "batch %d", i)))
	}
	if n := len(e.objects(t)); n != 6 {
		t.Fatalf("%d objects, want 6", n)
	}
	if off := p.OffsetForTimestamp(now.Add(-3*time.Hour - time.Minute).UnixMilli()); off != bases[3] {
		t.Fatalf("OffsetForTimestamp = %d, want %d", off, bases[3])
	}
	// Older than 3.5 hours: the first three batches.
	if err := p.Retain(now, (3*time.Hour + 30*time.Minute).Milliseconds(), -1); err != nil {
		t.Fatal(err)
	}
	if p.StartOffset() != bases[3] || len(e.objects(t)) != 3 {
		t.Fatalf("after retention: start %d, %d objects; want %d, 3", p.StartOffset(), len(e.objects(t)), bases[3])
	}
	if _, err := p.Read(context.Background(), bases[1], 100); errs.As(err) == nil || errs.As(err).Code != objlog.CodeOffsetOutOfRange {
		t.Fatalf("read below the start = %v, want %s", err, objlog.CodeOffsetOutOfRange)
	}
	// DeleteRecords inside a batch keeps that batch's object.
	if err := p.DeleteBefore(bases[4] + 1); err != nil {
		t.Fatal(err)
	}
	if p.StartOffset() != bases[4]+1 || len(e.objects(t)) != 2 {
		t.Fatalf("after DeleteBefore: start %d, %d objects", p.StartOffset(), len(e.objects(t)))
	}
	// By bytes the newest batch always stays.
	if err := p.Retain(now, -1, 0); err != nil {
		t.Fatal(err)
	}
	if p.StartOffset() != bases[5] || len(e.objects(t)) != 1 {
		t.Fatalf("after byte retention: start %d, %d objects", p.StartOffset(), len(e.objects(t)))
	}
	st.Close()
	st = e.mustOpen(t)
	if p, err = st.Partition("topicid2-0", false); err != nil || p.StartOffset() != bases[5] || len(readAll(t, p)) != 1 {
		t.Fatalf("after reopening: %v", err)
	}
	if err := st.DropPartition("topicid2-0"); err != nil {
		t.Fatal(err)
	}
	if n := len(e.objects(t)); n != 0 {
		t.Fatalf("%d objects left after DropPartition", n)
	}
	if _, err := st.Partition("topicid2-0", false); errs.As(err) == nil || errs.As(err).Code != objlog.CodePartitionNotFound {
		t.Fatalf("dropped partition: %v", err)
	}
}

func TestCompactionRewritesSmallObjectsIntoOne(t *testing.T) {
	e := newEnv(t)
	st := e.mustOpen(t, func(o *objlog.Options) { o.CompactEvery = -1; o.RequestTimeout = time.Second })
	var want []map[int64][]byte
	var ps []*objlog.Partition
	for i := range 2 {
		p, err := st.Partition(fmt.Sprintf("topicid3-%d", i), true)
		if err != nil {
			t.Fatal(err)
		}
		ps = append(ps, p)
		want = append(want, map[int64][]byte{})
	}
	for i := range 12 {
		// One durable append at a time: one object each.
		data := fmt.Appendf(nil, "batch %d %s", i, bytes.Repeat([]byte{'y'}, i*100))
		want[i%2][mustAppend(t, ps[i%2], batchMeta(3, int64(i), 9, int32(3*i)), data)] = data
	}
	before := e.objects(t)
	if len(before) != 12 {
		t.Fatalf("%d objects, want 12", len(before))
	}
	n, err := st.Compact(context.Background(), 0)
	if err != nil || n != 12 {
		t.Fatalf("Compact = %d, %v; want 12 objects replaced", n, err)
	}
	check := func(st *objlog.Store) {
		t.Helper()
		for i := range 2 {
			p, err := st.Partition(fmt.Sprintf("topicid3-%d", i), false)
			if err != nil {
				t.Fatal(err)
			}
			got := readAll(t, p)
			if len(got) != len(want[i]) {
				t.Fatalf("partition %d: %d batches after compaction, want %d", i, len(got), len(want[i]))
			}
			for base, data := range want[i] {
				if !bytes.Equal(got[base], data) {
					t.Fatalf("partition %d: batch %d reads %q after compaction", i, base, got[base])
				}
			}
		}
	}
	check(st)
	// The replaced objects go once no read can still use them.
	deadline := time.Now().Add(20 * time.Second)
	for len(e.objects(t)) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("%d objects after compaction, want 1", len(e.objects(t)))
		}
		time.Sleep(200 * time.Millisecond)
		st.Compact(context.Background(), 0)
	}
	st.Close()
	st = e.mustOpen(t, func(o *objlog.Options) { o.CompactEvery = -1 })
	check(st)
	p0, _ := st.Partition("topicid3-0", false)
	if tail := p0.Tail(1); len(tail) != 1 || tail[0].ProducerID != 9 || tail[0].BaseSequence != 30 {
		t.Fatalf("Tail after compaction = %+v", tail)
	}
}
