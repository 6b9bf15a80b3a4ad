package seglog

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/errs"
)

// TestNoPlainUserBytesOnDisk appends batches and metadata carrying a random
// marker and then looks for the marker in every file, raw, in base64 and in
// hex, after rolls, compaction and re-encryption.
func TestNoPlainUserBytesOnDisk(t *testing.T) {
	dir := t.TempDir()
	marker := fmt.Sprintf("CANARY%016x", rand.Uint64())
	s := openStore(t, dir, Options{Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 2048, Sync: true})
	p := mustPartition(t, s, "p0")
	for i := range 30 {
		data := []byte(strings.Repeat(marker, 1+i%5))
		if _, err := p.Append(context.Background(), BatchMeta{Records: 1, ProducerID: -1}, data); err != nil {
			t.Fatal(err)
		}
	}
	s.PutMeta("topic/"+marker, []byte("config of "+marker))
	s.PutMeta("group/"+marker+"/offset", []byte(marker))
	assertNoMarker(t, dir, marker)
	if err := s.ReencryptTo(context.Background(), newDEK(t, "k2"), nil); err != nil {
		t.Fatal(err)
	}
	appendN(t, p, 3, 64, 1)
	assertNoMarker(t, dir, marker)
	s.Close()
	assertNoMarker(t, dir, marker)
}

func assertNoMarker(t *testing.T, dir, marker string) {
	t.Helper()
	m := []byte(marker)
	forms := map[string]string{
		"raw":          marker,
		"base64":       base64.StdEncoding.EncodeToString(m),
		"base64url":    base64.RawURLEncoding.EncodeToString(m),
		"hex":          hex.EncodeToString(m),
		"HEX":          strings.ToUpper(hex.EncodeToString(m)),
		"base64 inner": base64.StdEncoding.EncodeToString(m[1:])[:12],
	}
	files := 0
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for name, f := range forms {
			if strings.Contains(string(b), f) || strings.Contains(path, f) {
				t.Errorf("%s holds the marker (%s)", path, name)
			}
		}
		return nil
	})
	if files < 4 {
		t.Fatalf("only %d files scanned", files)
	}
}

// TestTornTailIsCut damages the end of the active segment at many points,
// by truncation and by garbling everything after the point, and checks that
// Open keeps every block that ends before the damage and nothing else.
func TestTornTailIsCut(t *testing.T) {
	for _, unsealed := range []bool{false, true} {
		t.Run(modeName(unsealed), func(t *testing.T) { testTornTail(t, unsealed, 12, 40) })
		// Batches sealed in chunks and written a piece at a time: a crash
		// may leave some pieces of the last one.
		t.Run(modeName(unsealed)+"/large", func(t *testing.T) { testTornTail(t, unsealed, 3, 600<<10) })
	}
}

func testTornTail(t *testing.T, unsealed bool, n, size int) {
	dir := t.TempDir()
	opts := Options{StoreID: "dep-1", Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 4 << 20, Unsealed: unsealed}
	s := openStore(t, dir, opts)
	p := mustPartition(t, s, "p")
	appendN(t, p, n, size, 2)
	entries := append([]entry(nil), p.active().entries...)
	path := filepath.Join(dir, "p", "p", segmentName(0))
	s.Close()
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cuts []int
	for _, e := range entries {
		cuts = append(cuts, int(e.pos), int(e.pos)+5, int(e.pos)+14, int(e.pos)+int(e.len)/2, int(e.pos+int64(e.len))-1)
		if e.len > emitEvery {
			cuts = append(cuts, int(e.pos)+emitEvery+64) // just past the first piece written
		}
	}
	for _, garble := range []bool{false, true} {
		for _, cut := range cuts {
			damaged := append([]byte(nil), orig[:cut]...)
			if garble {
				for i := cut; i < len(orig); i++ {
					damaged = append(damaged, orig[i]^byte(0x5a+i))
				}
			}
			if err := os.WriteFile(path, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			complete := 0
			for _, e := range entries {
				if e.pos+int64(e.len) <= int64(cut) {
					complete++
				}
			}
			s, err := Open(dir, opts)
			if err != nil {
				t.Fatalf("garble=%v cut=%d: Open: %v", garble, cut, err)
			}
			p, _ := s.Partition("p", false)
			if p.EndOffset() != int64(2*complete) {
				t.Fatalf("garble=%v cut=%d: end %d, want %d", garble, cut, p.EndOffset(), 2*complete)
			}
			checkBatches(t, readAllBatches(t, p), 0, size)
			// The cut point takes new appends, which must survive a reopen.
			appendN(t, p, 1, size, 2)
			s.Close()
			s = openStore(t, dir, opts)
			p, _ = s.Partition("p", false)
			if p.EndOffset() != int64(2*complete+2) {
				t.Fatalf("garble=%v cut=%d: end %d after append and reopen", garble, cut, p.EndOffset())
			}
			checkBatches(t, readAllBatches(t, p), 0, size)
			s.Close()
		}
	}
}

// TestCorruptionInTheMiddleIsAnError flips one byte inside an early block:
// that is not a torn tail, so nothing may be cut.
func TestCorruptionInTheMiddleIsAnError(t *testing.T) {
	dir := t.TempDir()
	opts := Options{StoreID: "dep-1", Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 700}
	s := openStore(t, dir, opts)
	p := mustPartition(t, s, "p")
	appendN(t, p, 12, 200, 1) // three batches per segment
	sealed, active := p.segs[0], p.active()
	sealedEntries, err := p.entriesOf(sealed, s.keys.Load())
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	flip := func(path string, at int64) func() {
		b, _ := os.ReadFile(path)
		orig := append([]byte(nil), b...)
		b[at] ^= 0x01
		os.WriteFile(path, b, 0o600)
		return func() { os.WriteFile(path, orig, 0o600) }
	}
	t.Run("active segment: Open refuses", func(t *testing.T) {
		restore := flip(filepath.Join(dir, "p", "p", segmentName(active.base)), active.entries[0].pos+40)
		defer restore()
		if _, err := Open(dir, opts); !errs.Is(errs.Unprocessable, err) {
			t.Fatalf("Open: %v, want unprocessable", err)
		}
	})
	t.Run("sealed segment: Read refuses that batch", func(t *testing.T) {
		restore := flip(filepath.Join(dir, "p", "p", segmentName(sealed.base)), sealedEntries[1].pos+40)
		defer restore()
		s := openStore(t, dir, opts)
		p, _ := s.Partition("p", false)
		if _, err := p.Read(context.Background(), 0, 1); err != nil {
			t.Fatalf("undamaged batch: %v", err)
		}
		if _, err := p.Read(context.Background(), 1, 1); !errs.Is(errs.Unprocessable, err) {
			t.Fatalf("Read of damaged batch: %v, want unprocessable", err)
		}
		s.Close()
	})
	t.Run("sealed segment without index: Open refuses", func(t *testing.T) {
		restore := flip(filepath.Join(dir, "p", "p", segmentName(sealed.base)), sealedEntries[1].pos+40)
		defer restore()
		idx := filepath.Join(dir, "p", "p", indexName(sealed.base))
		b, _ := os.ReadFile(idx)
		os.Remove(idx)
		defer os.WriteFile(idx, b, 0o600)
		if _, err := Open(dir, opts); !errs.Is(errs.Unprocessable, err) {
			t.Fatalf("Open: %v, want unprocessable", err)
		}
	})
}

// TestMovedBlocksDoNotOpen swaps two blocks of equal size inside a segment,
// and copies a segment into another partition: the additional data binds
// each block to its place.
func TestMovedBlocksDoNotOpen(t *testing.T) {
	dir := t.TempDir()
	opts := Options{StoreID: "dep-1", Keys: []*DEK{newDEK(t, "k1")}, SegmentBytes: 1 << 20}
	s := openStore(t, dir, opts)
	a, b := mustPartition(t, s, "a"), mustPartition(t, s, "b")
	appendN(t, a, 4, 100, 1)
	appendN(t, b, 4, 100, 1)
	ea := append([]entry(nil), a.active().entries...)
	s.Close()

	pathA := filepath.Join(dir, "p", "a", segmentName(0))
	pathB := filepath.Join(dir, "p", "b", segmentName(0))
	origA, _ := os.ReadFile(pathA)
	origB, _ := os.ReadFile(pathB)
	restore := func() {
		os.WriteFile(pathA, origA, 0o600)
		os.WriteFile(pathB, origB, 0o600)
	}

	t.Run("two blocks swapped", func(t *testing.T) {
		defer restore()
		sw := append([]byte(nil), origA...)
		x, y := ea[1], ea[2]
		copy(sw[x.pos:], origA[y.pos:y.pos+int64(y.len)])
		copy(sw[y.pos:], origA[x.pos:x.pos+int64(x.len)])
		os.WriteFile(pathA, sw, 0o600)
		if _, err := Open(dir, opts); !errs.Is(errs.Unprocessable, err) {
			t.Fatalf("Open: %v, want unprocessable", err)
		}
	})
	t.Run("segment copied to another partition", func(t *testing.T) {
		defer restore()
		os.WriteFile(pathB, origA, 0o600)
		if _, err := Open(dir, opts); !errs.Is(errs.Unprocessable, err) {
			t.Fatalf("Open: %v, want unprocessable", err)
		}
	})
}

// The crash test re-executes the test binary: the child appends with Sync
// from several goroutines to two partitions and prints every acknowledged
// batch; the parent kills it with SIGKILL at a random moment, reopens, and
// checks that every acknowledged batch is there exactly once and in order.
const crashChildEnv = "SEGLOG_CRASH_CHILD"

func TestCrashChild(t *testing.T) {
	spec := os.Getenv(crashChildEnv)
	if spec == "" {
		t.Skip("run by TestCrashKeepsAcknowledgedBatches")
	}
	dir, keyHex, _ := strings.Cut(spec, ";")
	key, _ := hex.DecodeString(keyHex)
	s, err := Open(dir, Options{StoreID: "dep-crash", Keys: []*DEK{{ID: "k1", Key: key}}, Sync: true, SegmentBytes: 16 << 10})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(2)
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			p, err := s.Partition(fmt.Sprintf("p%d", w%2), true)
			if err != nil {
				panic(err)
			}
			for i := 0; ; i++ {
				tag := fmt.Sprintf("%d-%d-%d", os.Getpid(), w, i)
				data := []byte(tag + strings.Repeat("x", rand.IntN(2000)))
				base, err := p.Append(context.Background(), BatchMeta{Records: int32(1 + i%4)}, data)
				if err != nil {
					panic(err)
				}
				out.Lock()
				fmt.Printf("ack %s %d %s\n", p.name, base, tag)
				out.Unlock()
			}
		})
	}
	wg.Wait()
}

func TestCrashKeepsAcknowledgedBatches(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir := t.TempDir()
	key := newDEK(t, "k1")
	type ack struct {
		base int64
		tag  string
	}
	acked := map[string][]ack{}
	for round := range 3 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashChildEnv+"="+dir+";"+hex.EncodeToString(key.Key))
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 20 + rand.IntN(300)
		sc := bufio.NewScanner(stdout)
		n := 0
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 4 || f[0] != "ack" {
				continue
			}
			base, _ := strconv.ParseInt(f[2], 10, 64)
			acked[f[1]] = append(acked[f[1]], ack{base, f[3]})
			if n++; n == killAfter {
				// Let it run into the middle of further writes first.
				time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
				cmd.Process.Signal(syscall.SIGKILL)
			}
		}
		cmd.Wait()
		if n < killAfter {
			t.Fatalf("round %d: child acknowledged only %d batches", round, n)
		}

		s, err := Open(dir, Options{StoreID: "dep-crash", Keys: []*DEK{key}, Sync: true})
		if err != nil {
			t.Fatalf("round %d: Open after SIGKILL: %v", round, err)
		}
		for name, acks := range acked {
			p, err := s.Partition(name, false)
			if err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
			bs := readAllBatches(t, p)
			at := map[int64]string{}
			seen := map[string]bool{}
			last := map[string]int{} // per writer, the last sequence seen
			for _, b := range bs {
				tag := strings.TrimRight(string(b.Data), "x")
				if seen[tag] {
					t.Fatalf("round %d: %s: batch %s stored twice", round, name, tag)
				}
				seen[tag] = true
				at[b.Meta.BaseOffset] = tag
				parts := strings.Split(tag, "-")
				writer := parts[0] + "-" + parts[1]
				seq, _ := strconv.Atoi(parts[2])
				if prev, ok := last[writer]; ok && seq <= prev {
					t.Fatalf("round %d: %s: writer %s out of order", round, name, writer)
				}
				last[writer] = seq
			}
			for _, a := range acks {
				if at[a.base] != a.tag {
					t.Fatalf("round %d: %s: acknowledged batch %s at %d is missing (found %q)", round, name, a.tag, a.base, at[a.base])
				}
			}
		}
		s.Close()
	}
}
