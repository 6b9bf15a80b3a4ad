package seglog

import (
	"testing"

	"github.com/keyline/keyline/internal/errs"
)

// TestCreatePartitionAtStartsTheLogThere creates a partition at offset 1000:
// it is empty there, its first append lands there, the start survives a
// reopen, and creating it again is a Conflict.
func TestCreatePartitionAtStartsTheLogThere(t *testing.T) {
	dir := t.TempDir()
	key := newDEK(t, "k1")
	s := openStore(t, dir, Options{Keys: []*DEK{key}})
	p, err := s.CreatePartitionAt("t-0", 1000)
	if err != nil {
		t.Fatal(err)
	}
	if p.StartOffset() != 1000 || p.EndOffset() != 1000 {
		t.Fatalf("new partition spans [%d, %d), want [1000, 1000)", p.StartOffset(), p.EndOffset())
	}
	appendN(t, p, 3, 100, 5)
	if _, err := s.CreatePartitionAt("t-0", 0); !errs.Is(errs.Conflict, err) {
		t.Fatalf("creating an existing partition: %v, want Conflict", err)
	}
	if _, err := s.CreatePartitionAt("t-1", -1); !errs.Is(errs.Invalid, err) {
		t.Fatalf("a negative start: %v, want Invalid", err)
	}
	empty, err := s.CreatePartitionAt("t-2", 42)
	if err != nil || empty.EndOffset() != 42 {
		t.Fatalf("empty partition at 42: %v, end %d", err, empty.EndOffset())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, Options{Keys: []*DEK{key}})
	p = mustPartition(t, s, "t-0")
	if p.StartOffset() != 1000 || p.EndOffset() != 1015 {
		t.Fatalf("after reopen [%d, %d), want [1000, 1015)", p.StartOffset(), p.EndOffset())
	}
	checkBatches(t, readAllBatches(t, p), 1000, 100)
	if e := mustPartition(t, s, "t-2"); e.StartOffset() != 42 || e.EndOffset() != 42 {
		t.Fatalf("empty partition after reopen [%d, %d), want [42, 42)", e.StartOffset(), e.EndOffset())
	}
}
