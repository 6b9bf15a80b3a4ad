package main

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// compaction fills a compacted topic's partition with about 64 MB of 1 KiB
// values over K distinct keys in 1 MiB segments, then times one pass of
// the log cleaner over it: MB/s of log passed over (every sealed segment is
// read twice, for the key map and to rewrite it; those that change are
// sealed again and swapped in).
func (b *bench) compaction() {
	const total = 64 << 20
	for _, keys := range []int{1_000, 50_000} {
		t := b.keyline(false)
		ctx := context.Background()
		topic := fmt.Sprintf("compacted-%d", keys)
		if _, err := t.broker.CreateTopic(ctx, topic, 1, map[string]string{"cleanup.policy": "compact", "segment.bytes": "1048576"}); err != nil {
			fatal(err)
		}
		vals := values(1024)
		prod := t.client(kgo.DefaultProduceTopic(topic))
		for i := range total / 1024 {
			prod.Produce(ctx, &kgo.Record{Key: fmt.Appendf(nil, "key-%d", i%keys), Value: vals[i%len(vals)]}, nil)
		}
		if err := prod.Flush(ctx); err != nil {
			fatal(err)
		}
		prod.Close()
		before := t.store.SizeBytes()
		start := time.Now()
		t.broker.CompactNow(ctx)
		took := time.Since(start)
		c := t.broker.Compaction()
		fmt.Printf("== compaction pass, %d keys: %.0f MB log in %v = %.1f MB/s; %.0f MB -> %.0f MB stored (%d segments rewritten), %d records removed ==\n",
			keys, float64(before)/1e6, took.Round(time.Millisecond), float64(before)/1e6/took.Seconds(),
			float64(before)/1e6, float64(t.store.SizeBytes())/1e6, c.Segments, c.Removed)
		t.close()
	}
}
