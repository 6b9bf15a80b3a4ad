package broker

import (
	"crypto/rand"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// openDiskStore is the encrypted seglog store as the broker's storage, as
// a deployment uses it.
func openDiskStore(t *testing.T) Storage {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	st, err := seglog.Open(t.TempDir(), seglog.Options{StoreID: "dep", Keys: []*seglog.DEK{{ID: "k1", Key: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return StorageOf(st)
}

// TestSegmentBytesRollsTheLog: retention.bytes can only delete sealed
// segments, so a partition that keeps the store's 64 MiB segments keeps
// all of 3 MiB, while segment.bytes=1 MiB lets retention drop the oldest.
func TestSegmentBytesRollsTheLog(t *testing.T) {
	for _, tt := range []struct {
		name         string
		configs      map[string]string
		wantRetained bool
	}{
		{"default segments", map[string]string{"retention.bytes": "1048576"}, false},
		{"segment.bytes", map[string]string{"retention.bytes": "1048576", "segment.bytes": "1048576"}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := openDiskStore(t)
			ln := startBroker(t, nil, func(c *Config) { c.Storage = st })
			if _, err := ln.CreateTopic(t.Context(), "rolled", 1, tt.configs); err != nil {
				t.Fatal(err)
			}
			cl := ln.client(t, writerKey, kgo.DefaultProduceTopic("rolled"), kgo.ProducerBatchCompression(kgo.NoCompression()))
			value := make([]byte, 100<<10)
			for range 30 {
				if err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: value}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			ln.applyRetention()
			start := ln.topics.partitions(ln.topics.byNameOrNil("rolled"))[0].log.StartOffset()
			if retained := start > 0; retained != tt.wantRetained {
				t.Fatalf("start offset %d after retention; want retention to have dropped segments: %v", start, tt.wantRetained)
			}
		})
	}
}
