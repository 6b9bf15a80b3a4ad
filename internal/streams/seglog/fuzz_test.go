package seglog

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyline/keyline/internal/errs"
)

var fuzzKey = &DEK{ID: "fuzz-key", Key: bytes.Repeat([]byte{0x42}, 32)}

// FuzzBlockDecoder feeds arbitrary bytes to the block, batch, index and
// metadata-record decoders: they may refuse, never panic, and never report
// good blocks beyond the input.
func FuzzBlockDecoder(f *testing.F) {
	sealed, _ := newKeyring("dep-fuzz", false, []*DEK{fuzzKey})
	unsealed, _ := newKeyring("dep-fuzz", true, nil)
	id := blockID{kind: kindData, stream: "p", base: 0}
	var meta [metaLen]byte
	for _, kr := range []*keyring{sealed, unsealed} {
		b := kr.seal(nil, id, encodeMeta(meta[:0], BatchMeta{Records: 1, Size: 5}), []byte("hello"))
		id2 := id
		id2.pos = int64(len(b))
		two := kr.seal(append([]byte(nil), b...), id2, encodeMeta(meta[:0], BatchMeta{BaseOffset: 1, Records: 2}))
		f.Add(b)
		f.Add(two)
		f.Add(two[:len(two)-3])
		f.Add(b[:headerFixed+2])
		seg := newSegment(0, nil)
		seg.size = int64(len(b))
		seg.add(entry{meta: BatchMeta{Records: 1, Size: 5}, len: int32(len(b))}, kr.current)
		f.Add(encodeIndex(seg))
	}
	chunked := sealed.only()
	chunked.shift = minChunkShift
	big := chunked.seal(nil, id, encodeMeta(meta[:0], BatchMeta{Records: 1, Size: 200}), batchData(0, 200))
	f.Add(big)
	f.Add(big[:len(big)-20])
	f.Add(encodeRecord(opPut, nsUser, "topic/x", []byte("v")))
	f.Add([]byte{})
	f.Add([]byte("KL\x01\x01\xff\xff\xff\x7f\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		parseHeader(data)
		for _, kr := range []*keyring{sealed, unsealed} {
			seg := newSegment(0, nil)
			end, err := scanSegment(seg, append([]byte(nil), data...), kr, "p")
			if end < 0 || end > int64(len(data)) {
				t.Fatalf("scan ended at %d of %d", end, len(data))
			}
			if err == nil {
				var last int64 = -1
				for _, e := range seg.entries {
					if e.pos <= last || e.pos+int64(e.len) > end {
						t.Fatalf("entry at %d+%d outside the good blocks (end %d)", e.pos, e.len, end)
					}
					last = e.pos
				}
			}
			openBatch(append([]byte(nil), data...), kr, id)
			// The fetch path opens into a buffer of exactly the expected
			// size; a block that does not fit must be refused.
			for _, want := range []int{0, metaLen + 5, len(data)} {
				dst := make([]byte, want)
				if openBatchTo(dst[:0:want], data, kr, id, want) == nil && want > 0 && len(data) < want {
					t.Fatalf("a %d-byte block opened into %d plain bytes", len(data), want)
				}
			}
		}
		decodeIndex(0, data, int64(len(data)))
		j := &metaJournal{live: [2]map[string][]byte{{}, {}}, keys: map[string]int{}}
		j.apply(data)
	})
}

// FuzzOpenDamagedStore damages one file of a store (overwrite or truncate at
// a fuzzed place) and opens it: Open and every read after it may fail, but
// only with an errs value, never a panic.
func FuzzOpenDamagedStore(f *testing.F) {
	tmpl := f.TempDir()
	opts := Options{StoreID: "dep-fuzz", Keys: []*DEK{fuzzKey}, SegmentBytes: 600}
	s, err := Open(tmpl, opts)
	if err != nil {
		f.Fatal(err)
	}
	for _, name := range []string{"a", "b"} {
		p, _ := s.Partition(name, true)
		appendN(f, p, 6, 150, 2)
	}
	// A batch over one chunk, so that damage also lands in chunked blocks.
	big, _ := s.Partition("big", true)
	appendN(f, big, 1, 70<<10, 1)
	p, _ := s.Partition("a", false)
	p.DeleteBefore(3)
	s.PutMeta("topic/t", []byte("config"))
	s.Close()
	var files []string
	filepath.WalkDir(tmpl, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && d.Name() != "LOCK" {
			rel, _ := filepath.Rel(tmpl, path)
			files = append(files, rel)
		}
		return nil
	})
	for i := range files {
		f.Add(uint8(i), uint32(30+i*97), []byte("garbage"), false)
		f.Add(uint8(i), uint32(13+i*131), []byte{}, true)
	}
	f.Fuzz(func(t *testing.T, fileIdx uint8, off uint32, patch []byte, truncate bool) {
		dir := t.TempDir()
		copyDir(t, tmpl, dir)
		path := filepath.Join(dir, files[int(fileIdx)%len(files)])
		b, _ := os.ReadFile(path)
		if truncate {
			b = b[:int(off)%(len(b)+1)]
		} else if len(b) > 0 {
			at := int(off) % len(b)
			copy(b[at:], patch)
		}
		os.WriteFile(path, b, 0o600)

		s, err := Open(dir, opts)
		if err != nil {
			if errs.As(err) == nil {
				t.Fatalf("Open failed with a non-errs error: %v", err)
			}
			return
		}
		defer s.Close()
		s.ListMeta("")
		for _, name := range s.Partitions() {
			p, err := s.Partition(name, false)
			if err != nil {
				t.Fatal(err)
			}
			p.Tail(3)
			p.OffsetForTimestamp(5)
			for from := p.StartOffset(); from < p.EndOffset(); {
				bs, err := p.Read(context.Background(), from, 1)
				if err != nil {
					if errs.As(err) == nil {
						t.Fatalf("Read failed with a non-errs error: %v", err)
					}
					break
				}
				from = bs[len(bs)-1].Meta.LastOffset() + 1
			}
			if _, _, _, err := p.ReadAppend(context.Background(), p.StartOffset(), 1<<20, nil); err != nil && errs.As(err) == nil {
				t.Fatalf("ReadAppend failed with a non-errs error: %v", err)
			}
			if _, err := p.Append(context.Background(), BatchMeta{Records: 1}, []byte("after damage")); err != nil && errs.As(err) == nil {
				t.Fatalf("Append failed with a non-errs error: %v", err)
			}
		}
	})
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(to, rel), 0o700)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return os.WriteFile(filepath.Join(to, rel), b, 0o600)
	})
}
