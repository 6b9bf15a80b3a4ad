package seglog

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"
)

func chunkKeyring(t *testing.T, shift uint8) *keyring {
	t.Helper()
	kr, err := newKeyring("dep-chunks", false, []*DEK{newDEK(t, "dek-1")})
	if err != nil {
		t.Fatal(err)
	}
	kr.shift = shift
	return kr
}

// TestChunkedBlocksRoundTrip seals blocks around and far past the chunk
// size (64-byte chunks here) from parts cut at odd places, and opens them
// every way the package does.
func TestChunkedBlocksRoundTrip(t *testing.T) {
	kr := chunkKeyring(t, 6)
	id := blockID{kind: kindData, stream: "p0", base: 7, pos: 4096}
	for _, size := range []int{1, 63, 64, 65, 128, 129, 1000, 300<<10 + 12345} {
		plain := batchData(int64(size), size)
		cut := size / 3
		b := kr.seal([]byte("prefix"), id, plain[:cut], plain[cut:])[len("prefix"):]
		if len(b) != kr.blockSize(size) {
			t.Fatalf("%d bytes: block of %d bytes, blockSize says %d", size, len(b), kr.blockSize(size))
		}
		h, err := parseHeader(b)
		if err != nil {
			t.Fatalf("%d bytes: %v", size, err)
		}
		if h.chunked != (size > 64) {
			t.Fatalf("%d bytes: chunked = %v", size, h.chunked)
		}
		if h.chunked {
			if _, n, pl, ok := chunkLayout(b[h.size:]); !ok || n != (size+63)/64 || pl != size {
				t.Fatalf("%d bytes: layout %d chunks, %d bytes, ok %v", size, n, pl, ok)
			}
		}
		if bytes.Contains(b, plain[:min(size, 16)]) && size >= 16 {
			t.Fatalf("%d bytes: plain bytes in the block", size)
		}
		got, err := kr.openCopy(b, h, id)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: openCopy: %v, equal %v", size, err, bytes.Equal(got, plain))
		}
		dst, err := kr.openTo([]byte("kept"), b, h, id)
		if err != nil || !bytes.Equal(dst, append([]byte("kept"), plain...)) {
			t.Fatalf("%d bytes: openTo: %v", size, err)
		}
		got, err = kr.open(b, h, id)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("%d bytes: open in place: %v, equal %v", size, err, bytes.Equal(got, plain))
		}
	}
}

// reheader rewrites a block's header for a new body length, with a valid
// CRC, as someone editing the file would.
func reheader(b []byte, h header, bodyLen int) {
	binary.LittleEndian.PutUint32(b[4:8], uint32(bodyLen))
	binary.LittleEndian.PutUint32(b[h.size-crcLen:h.size], crc32.Checksum(b[:h.size-crcLen], castagnoli))
}

// TestChunkedBlocksRefuseTampering: chunks swapped, dropped, resized or
// moved, or a bit flipped in any one, fail the whole block.
func TestChunkedBlocksRefuseTampering(t *testing.T) {
	kr := chunkKeyring(t, 6)
	id := blockID{kind: kindData, stream: "p0", base: 0, pos: 0}
	plain := batchData(1, 4*64)
	good := kr.seal(nil, id, plain)
	h, err := parseHeader(good)
	if err != nil {
		t.Fatal(err)
	}
	chunk := func(b []byte, i int) []byte {
		at := h.size + 1 + i*(64+chunkOverhead)
		return b[at : at+64+chunkOverhead]
	}
	cases := map[string]func(b []byte) ([]byte, blockID){
		"chunks 1 and 2 swapped": func(b []byte) ([]byte, blockID) {
			c1 := bytes.Clone(chunk(b, 1))
			copy(chunk(b, 1), chunk(b, 2))
			copy(chunk(b, 2), c1)
			return b, id
		},
		"last chunk dropped, header fixed up": func(b []byte) ([]byte, blockID) {
			reheader(b, h, h.bodyLen-64-chunkOverhead)
			return b[:len(b)-64-chunkOverhead], id
		},
		"chunk size byte changed": func(b []byte) ([]byte, blockID) {
			b[h.size] = 7
			return b, id
		},
		"bit flipped in chunk 3": func(b []byte) ([]byte, blockID) {
			chunk(b, 3)[nonceLen+5] ^= 1
			return b, id
		},
		"nonce of chunk 0 changed": func(b []byte) ([]byte, blockID) {
			chunk(b, 0)[0] ^= 0x80
			return b, id
		},
		"block moved": func(b []byte) ([]byte, blockID) {
			moved := id
			moved.pos = 512
			return b, moved
		},
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			b, at := tamper(bytes.Clone(good))
			h, err := parseHeader(b)
			if err != nil {
				t.Fatalf("the header should still parse: %v", err)
			}
			if _, err := kr.openTo(nil, b, h, at); !errors.Is(err, errAuth) {
				t.Fatalf("openTo: %v, want %v", err, errAuth)
			}
			if _, err := kr.open(b, h, at); !errors.Is(err, errAuth) {
				t.Fatalf("open: %v, want %v", err, errAuth)
			}
		})
	}
}

// TestLargeUnchunkedBlocksStillOpen: blocks written before chunking (one
// GCM message however large) open under a keyring that chunks.
func TestLargeUnchunkedBlocksStillOpen(t *testing.T) {
	old := chunkKeyring(t, 0)
	now := old.only()
	now.shift = defaultChunkShift
	id := blockID{kind: kindData, stream: "p0"}
	plain := batchData(3, 1<<20)
	b := old.seal(nil, id, plain)
	h, err := parseHeader(b)
	if err != nil || h.chunked {
		t.Fatalf("old block: chunked %v, %v", h.chunked, err)
	}
	if got, err := now.openTo(nil, b, h, id); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("openTo: %v", err)
	}
	if got, err := now.open(b, h, id); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %v", err)
	}
}

// TestChunkedBatchesThroughTheStore appends batches of one, several and
// many chunks, reads them with Read and ReadAppend, after a reopen (which
// scans the active segment) and after re-encryption.
func TestChunkedBatchesThroughTheStore(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	sizes := []int{100, 64 << 10, 64<<10 + 1, 300 << 10, 900 << 10}
	write := func(p *Partition) {
		for _, size := range sizes {
			base := p.EndOffset()
			if _, err := p.Append(ctx, BatchMeta{Records: 1, ProducerID: -1}, batchData(base, size)); err != nil {
				t.Fatal(err)
			}
		}
	}
	check := func(p *Partition, batches int) {
		t.Helper()
		var all []StoredBatch
		for from := int64(0); from < p.EndOffset(); {
			bs, err := p.Read(ctx, from, 1)
			if err != nil {
				t.Fatalf("Read(%d): %v", from, err)
			}
			all = append(all, bs...)
			from = bs[len(bs)-1].Meta.LastOffset() + 1
		}
		_, joined, metas, err := p.ReadAppend(ctx, 0, 1<<30, nil)
		if err != nil {
			t.Fatalf("ReadAppend: %v", err)
		}
		if len(all) != batches || len(metas) != batches {
			t.Fatalf("Read gave %d batches, ReadAppend %d, want %d", len(all), len(metas), batches)
		}
		for i, b := range all {
			want := batchData(b.Meta.BaseOffset, sizes[i%len(sizes)])
			if !bytes.Equal(b.Data, want) || !bytes.Equal(joined[:len(want)], want) {
				t.Fatalf("batch %d (%d bytes) differs", i, len(want))
			}
			joined = joined[len(want):]
		}
	}
	key := newDEK(t, "dek-1")
	s := openStore(t, dir, Options{Keys: []*DEK{key}, Sync: true})
	write(mustPartition(t, s, "p0"))
	check(mustPartition(t, s, "p0"), len(sizes))
	s.Close()

	s = openStore(t, dir, Options{Keys: []*DEK{key}, Sync: true})
	p := mustPartition(t, s, "p0")
	check(p, len(sizes))
	if err := s.ReencryptTo(ctx, newDEK(t, "dek-2"), nil); err != nil {
		t.Fatal(err)
	}
	write(p)
	check(p, 2*len(sizes))
}

// TestSealEmitHandsOutFinalPrefixes: what sealEmit hands out is the block's
// start and never changes afterwards (Append writes it to disk at once),
// pieces come every emitEvery plain bytes of a large block and once for a
// small one, in both modes, and an error from emit stops sealing.
func TestSealEmitHandsOutFinalPrefixes(t *testing.T) {
	unsealed, _ := newKeyring("dep-chunks", true, nil)
	id := blockID{kind: kindData, stream: "p0", pos: 100}
	for _, kr := range []*keyring{chunkKeyring(t, defaultChunkShift), unsealed} {
		for _, tc := range []struct{ size, pieces int }{{1000, 1}, {64 << 10, 1}, {200 << 10, 1}, {1 << 20, 4}, {1<<20 + 1, 5}} {
			plain := batchData(int64(tc.size), tc.size)
			var got [][]byte
			blk, err := kr.sealEmit(nil, id, func(b []byte) error {
				got = append(got, bytes.Clone(b))
				return nil
			}, plain[:46], plain[46:])
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != tc.pieces {
				t.Fatalf("unsealed %v, %d bytes: %d pieces, want %d", kr.unsealed, tc.size, len(got), tc.pieces)
			}
			for i, g := range got {
				if !bytes.Equal(g, blk[:len(g)]) || (i > 0 && len(g) <= len(got[i-1])) {
					t.Fatalf("unsealed %v, %d bytes: piece %d (%d bytes) is not a growing prefix of the block", kr.unsealed, tc.size, i, len(g))
				}
			}
			if !bytes.Equal(got[len(got)-1], blk) {
				t.Fatalf("unsealed %v, %d bytes: the last piece is not the whole block", kr.unsealed, tc.size)
			}
			stop := errors.New("disk full")
			calls := 0
			if _, err := kr.sealEmit(nil, id, func([]byte) error { calls++; return stop }, plain); !errors.Is(err, stop) || calls != 1 {
				t.Fatalf("unsealed %v, %d bytes: emit failing gave %v after %d calls", kr.unsealed, tc.size, err, calls)
			}
		}
	}
}
