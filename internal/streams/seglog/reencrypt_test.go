package seglog

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/keyline/keyline/internal/errs"
)

// Key IDs long and distinct enough to search for in raw files.
const (
	oldKeyID = "dek-old-7f3a"
	newKeyID = "dek-new-91c2b"
)

// fillForReencryption writes several partitions across many segments and
// some metadata.
func fillForReencryption(t *testing.T, s *Store) []*Partition {
	t.Helper()
	var parts []*Partition
	for i := range 3 {
		p := mustPartition(t, s, fmt.Sprintf("t-%d", i))
		appendN(t, p, 60, 200, 2)
		parts = append(parts, p)
	}
	for i := range 20 {
		if err := s.PutMeta(fmt.Sprintf("group/g%d", i), []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	return parts
}

// assertOnlyKey checks KeyIDsInUse and that no file names the old key: the
// key ID sits in every block header, so a block sealed by it would show.
func assertOnlyKey(t *testing.T, s *Store, dir string) {
	t.Helper()
	if got := s.KeyIDsInUse(); !slices.Equal(got, []string{newKeyID}) {
		t.Fatalf("KeyIDsInUse = %v, want only %s", got, newKeyID)
	}
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(oldKeyID)) {
				t.Errorf("%s still holds a block sealed by the old key", path)
			}
		}
		return nil
	})
}

func checkAll(t *testing.T, s *Store, names []string, wantBatches map[string]int) {
	t.Helper()
	for _, name := range names {
		p, err := s.Partition(name, false)
		if err != nil {
			t.Fatal(err)
		}
		bs := readAllBatches(t, p)
		checkBatches(t, bs, 0, 200)
		if len(bs) != wantBatches[name] {
			t.Fatalf("%s: %d batches, want %d", name, len(bs), wantBatches[name])
		}
	}
	if len(s.ListMeta("group/")) != 20 {
		t.Fatal("metadata lost")
	}
}

func TestReencryptionUnderConcurrentAppendsAndReads(t *testing.T) {
	dir := t.TempDir()
	oldKey, newKey := newDEK(t, oldKeyID), newDEK(t, newKeyID)
	s := openStore(t, dir, Options{Keys: []*DEK{oldKey}, SegmentBytes: 2048, Sync: true})
	parts := fillForReencryption(t, s)

	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var appended [3]atomic.Int64
	var readErrs atomic.Int64
	for i, p := range parts {
		wg.Go(func() {
			for ctx.Err() == nil {
				appendN(t, p, 1, 200, 2)
				appended[i].Add(1)
			}
		})
		wg.Go(func() {
			for ctx.Err() == nil {
				bs, err := p.Read(context.Background(), p.StartOffset(), 1<<20)
				if err != nil {
					readErrs.Add(1)
					t.Errorf("Read during re-encryption: %v", err)
					return
				}
				checkBatches(t, bs, 0, 200)
			}
		})
	}
	var calls []int64
	var total int64
	err := s.ReencryptTo(context.Background(), newKey, func(done, tot int64) {
		calls = append(calls, done)
		total = tot
	})
	stop()
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) < 3 || calls[len(calls)-1] != total || !slices.IsSorted(calls) || total == 0 {
		t.Fatalf("progress calls %v of total %d", calls, total)
	}
	want := map[string]int{}
	for i, p := range parts {
		want[p.name] = 60 + int(appended[i].Load())
	}
	t.Logf("appended during re-encryption: %v", want)
	names := s.Partitions()
	checkAll(t, s, names, want)
	assertOnlyKey(t, s, dir)
	s.Close()

	if _, err := Open(dir, Options{StoreID: "dep-1", Keys: []*DEK{oldKey}}); !errs.Is(errs.Unprocessable, err) {
		t.Fatalf("Open with only the old key: %v, want unprocessable", err)
	}
	s = openStore(t, dir, Options{Keys: []*DEK{newKey}})
	checkAll(t, s, names, want)
	assertOnlyKey(t, s, dir)
}

func TestInterruptedReencryptionResumes(t *testing.T) {
	dir := t.TempDir()
	oldKey, newKey := newDEK(t, oldKeyID), newDEK(t, newKeyID)
	s := openStore(t, dir, Options{Keys: []*DEK{oldKey}, SegmentBytes: 2048})
	fillForReencryption(t, s)
	names := s.Partitions()
	want := map[string]int{}
	for _, n := range names {
		want[n] = 60
	}

	ctx, cancel := context.WithCancel(context.Background())
	err := s.ReencryptTo(ctx, newKey, func(done, total int64) {
		if done > 0 && done < total/2 {
			cancel()
		}
	})
	if !errs.Is(errs.Unavailable, err) {
		t.Fatalf("canceled ReencryptTo: %v, want unavailable", err)
	}
	if got := s.KeyIDsInUse(); !slices.Equal(got, []string{newKeyID, oldKeyID}) {
		t.Fatalf("KeyIDsInUse midway = %v, want both", got)
	}
	s.Close()

	if _, err := Open(dir, Options{StoreID: "dep-1", Keys: []*DEK{newKey}}); !errs.Is(errs.Unprocessable, err) {
		t.Fatalf("Open midway without the old key: %v, want unprocessable", err)
	}
	s = openStore(t, dir, Options{Keys: []*DEK{newKey, oldKey}})
	checkAll(t, s, names, want)
	// New writes use the new key right away.
	p, _ := s.Partition(names[0], false)
	appendN(t, p, 1, 200, 2)
	want[names[0]]++
	if err := s.ReencryptTo(context.Background(), newKey, nil); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, names, want)
	assertOnlyKey(t, s, dir)
	s.Close()
	s = openStore(t, dir, Options{Keys: []*DEK{newKey}})
	checkAll(t, s, names, want)
}

func TestReencryptionRefusesAKeyThatContradictsItsID(t *testing.T) {
	s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, oldKeyID)}})
	fillForReencryption(t, s)
	err := s.ReencryptTo(context.Background(), newDEK(t, oldKeyID), nil)
	if !errs.Is(errs.Unprocessable, err) {
		t.Fatalf("ReencryptTo with other bytes under the same ID: %v", err)
	}
	if err := s.ReencryptTo(context.Background(), &DEK{ID: "short", Key: []byte{1}}, nil); !errs.Is(errs.Invalid, err) {
		t.Fatalf("ReencryptTo with a short key: %v", err)
	}
}
