package seglog

import (
	"bytes"
	"context"
	"testing"
)

// TestReadAppendMatchesRead reads the same ranges with Read and with
// ReadAppend, sealed and unsealed, across segment rolls and a re-encryption
// (so blocks of two keys are read at once), into a reused buffer that holds
// other bytes before: the batches come back equal, back to back, and the
// bytes already in the buffer stay as they were.
func TestReadAppendMatchesRead(t *testing.T) {
	for _, unsealed := range []bool{false, true} {
		name := "sealed"
		if unsealed {
			name = "unsealed"
		}
		t.Run(name, func(t *testing.T) {
			opts := Options{SegmentBytes: 4 << 10, Unsealed: unsealed}
			if !unsealed {
				opts.Keys = []*DEK{newDEK(t, "dek-1")}
			}
			s := openStore(t, t.TempDir(), opts)
			p := mustPartition(t, s, "p0")
			appendN(t, p, 20, 700, 3)
			if !unsealed {
				if err := s.ReencryptTo(context.Background(), newDEK(t, "dek-2"), nil); err != nil {
					t.Fatal(err)
				}
			}
			appendN(t, p, 10, 500, 2)
			prefix := []byte("bytes of another partition")
			buf := append([]byte(nil), prefix...)
			for _, tc := range []struct {
				from     int64
				maxBytes int32
			}{{0, 1}, {0, 3000}, {5, 2500}, {58, 100000}, {70, 1}, {0, 1 << 20}} {
				want, err := p.Read(context.Background(), tc.from, tc.maxBytes)
				if err != nil {
					t.Fatal(err)
				}
				var got []byte
				var metas []BatchMeta
				buf, got, metas, err = p.ReadAppend(context.Background(), tc.from, tc.maxBytes, buf[:len(prefix)])
				if err != nil {
					t.Fatalf("ReadAppend(%d, %d): %v", tc.from, tc.maxBytes, err)
				}
				if !bytes.Equal(buf[:len(prefix)], prefix) {
					t.Fatalf("ReadAppend overwrote what dst held: %q", buf[:len(prefix)])
				}
				var joined []byte
				for i, b := range want {
					joined = append(joined, b.Data...)
					if i >= len(metas) || metas[i] != b.Meta {
						t.Fatalf("ReadAppend(%d, %d): header %d differs from Read's", tc.from, tc.maxBytes, i)
					}
				}
				if len(metas) != len(want) || !bytes.Equal(got, joined) {
					t.Fatalf("ReadAppend(%d, %d): %d batches, %d bytes; Read: %d batches, %d bytes", tc.from, tc.maxBytes, len(metas), len(got), len(want), len(joined))
				}
			}
		})
	}
}

// TestReadAppendRefusesDamage: a block changed on disk fails ReadAppend as
// it fails Read.
func TestReadAppendRefusesDamage(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, Options{Keys: []*DEK{newDEK(t, "dek-1")}})
	p := mustPartition(t, s, "p0")
	appendN(t, p, 3, 300, 1)
	seg := p.active()
	b := make([]byte, 1)
	seg.f.ReadAt(b, seg.size-20)
	b[0] ^= 0xff
	seg.f.WriteAt(b, seg.size-20)
	if _, _, _, err := p.ReadAppend(context.Background(), 0, 1<<20, nil); err == nil {
		t.Fatal("ReadAppend returned a damaged batch")
	}
}

// TestLargeReadUsesPoolableBuffers: a read of more than maxPooledBlock
// bytes of one segment reads it in stretches no larger than that (a batch
// larger than it alone), so its buffers go back to the pool instead of
// being allocated, and cleared, at the size of the whole read each time;
// what it returns is unchanged.
func TestLargeReadUsesPoolableBuffers(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{SegmentBytes: 1 << 30, Keys: []*DEK{newDEK(t, "dek-1")}})
	p := mustPartition(t, s, "p0")
	appendN(t, p, 40, 512<<10, 1) // 20 MiB in one segment
	appendN(t, p, 1, 9<<20, 1)    // one batch over maxPooledBlock
	var sizes []int
	_, runs, err := p.readRuns(context.Background(), "test", 0, 1<<30, func(n int) []byte {
		sizes = append(sizes, n)
		return make([]byte, n)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) < 4 {
		t.Fatalf("a 29 MiB read of one segment came in %d stretches (%v)", len(runs), sizes)
	}
	for i, n := range sizes {
		if n > maxPooledBlock && len(runs[i].entries) > 1 {
			t.Fatalf("stretch %d holds %d batches in %d bytes, over the pooled size %d", i, len(runs[i].entries), n, maxPooledBlock)
		}
	}
	want, err := p.Read(context.Background(), 0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	_, got, metas, err := p.ReadAppend(context.Background(), 0, 1<<30, nil)
	if err != nil {
		t.Fatal(err)
	}
	var joined []byte
	for _, b := range want {
		joined = append(joined, b.Data...)
	}
	if len(metas) != 41 || len(want) != 41 || !bytes.Equal(got, joined) {
		t.Fatalf("ReadAppend: %d batches, %d bytes; Read: %d batches, %d bytes", len(metas), len(got), len(want), len(joined))
	}
}
