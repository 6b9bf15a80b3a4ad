package seglog

import (
	"context"
	"testing"
	"time"
)

// TestSetRollRollsBySizeAndAge shows a partition's own segment.bytes and
// segment.ms at work: only sealed segments can be retained away, so the
// log-start offset after Retain(bytes=0) is the active segment's base.
func TestSetRollRollsBySizeAndAge(t *testing.T) {
	now := time.Now()
	old := now.Add(-time.Hour).UnixMilli()
	tests := []struct {
		name            string
		rollBytes, ms   int64
		firstTs         int64
		wantActiveStart int64
	}{
		{name: "the store's size keeps one segment", wantActiveStart: 0},
		{name: "segment.bytes rolls before every batch that would exceed it", rollBytes: 1, wantActiveStart: 2},
		{name: "segment.ms rolls once the first batch is older than it", ms: 60_000, firstTs: old, wantActiveStart: 1},
		{name: "segment.ms leaves a young segment alone", ms: 60_000, firstTs: now.UnixMilli(), wantActiveStart: 0},
		{name: "a batch without a timestamp never ages its segment", ms: 1, firstTs: -1, wantActiveStart: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t, t.TempDir(), Options{Keys: []*DEK{newDEK(t, "k1")}})
			p := mustPartition(t, s, "p")
			p.SetRoll(tt.rollBytes, tt.ms)
			ts := []int64{tt.firstTs, now.UnixMilli(), now.UnixMilli()}
			for i, at := range ts {
				if _, err := p.Append(context.Background(), BatchMeta{Records: 1, FirstTimestamp: at, MaxTimestamp: at, ProducerID: -1}, batchData(int64(i), 100)); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Retain(now, -1, 0); err != nil {
				t.Fatal(err)
			}
			if got := p.StartOffset(); got != tt.wantActiveStart {
				t.Fatalf("start offset after retaining every sealed segment = %d, want %d", got, tt.wantActiveStart)
			}
		})
	}
}
