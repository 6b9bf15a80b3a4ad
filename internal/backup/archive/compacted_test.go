package archive_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// TestRestoreKeepsACompactedLogsGaps: a compacted log has gaps between its
// batches' offsets, and its first batch may lie beyond its start; a
// restore puts every batch back at its own offset.
func TestRestoreKeepsACompactedLogsGaps(t *testing.T) {
	opts := storeOptions("dep-1")
	opts.SegmentBytes = 2048
	src := openStore(t, tempDir(t, "src"), opts)
	p := compacted(t, src, 200)
	if bs, _ := p.Read(context.Background(), 0, 1); bs[0].Meta.BaseOffset == 0 {
		t.Fatal("the first batch should have been compacted away")
	}

	target := tempDir(t, "restored")
	ropts := storeOptions("dep-2")
	if err := restoreFrom(t, bytes.NewReader(backupBytes(t, src, 100_000)), target, ropts); err != nil {
		t.Fatal(err)
	}
	sameImage(t, src, openStore(t, target, ropts))
}

// compacted adds a compacted partition of batches batches to s: gaps between its batches,
// its first batch beyond its start.
func compacted(t *testing.T, s *seglog.Store, batches int) *seglog.Partition {
	t.Helper()
	p, err := s.Partition("profiles-0", true)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	now := time.Now()
	for i := range batches {
		data := fmt.Appendf(nil, "k%d|%s", i%4, bytes.Repeat([]byte{'v'}, 100))
		if _, err := p.Append(ctx, seglog.BatchMeta{Records: 1 + int32(i%3), FirstTimestamp: now.UnixMilli(), MaxTimestamp: now.UnixMilli(), ProducerID: -1}, data); err != nil {
			t.Fatal(err)
		}
	}
	oneRecord := func(m seglog.BatchMeta, data []byte) ([]seglog.Record, bool, error) {
		return []seglog.Record{{Offset: m.BaseOffset, Timestamp: m.MaxTimestamp, Key: data[:2], Raw: data}}, false, nil
	}
	if st, err := p.Compact(ctx, seglog.Compaction{Now: now, Records: oneRecord,
		Rebuild: func(seglog.BatchMeta, []byte, []seglog.Record) ([]byte, error) { return []byte{}, nil }}); err != nil || st.Removed == 0 {
		t.Fatalf("compaction: %+v, %v", st, err)
	}
	return p
}
