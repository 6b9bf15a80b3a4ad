package broker

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The benchmarks drive the broker through a real franz-go client over
// loopback with random (incompressible) values, as a deployment sees them.
// Both client and broker share the machine, so figures are end-to-end.

var benchSizes = []int{100, 1024}

func BenchmarkProduce(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			tb := startBroker(b, nil)
			tb.mustCreate(b, "bench", 4)
			cl := tb.client(b, writerKey, kgo.DefaultProduceTopic("bench"), kgo.ProducerLinger(5*time.Millisecond),
				kgo.ProducerBatchCompression(kgo.NoCompression()))
			value := make([]byte, size)
			rand.Read(value)
			ctx := testCtx(b)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for range b.N {
				cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
					if err != nil {
						b.Error(err)
					}
				})
			}
			if err := cl.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}

func BenchmarkFetch(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			tb := startBroker(b, nil)
			tb.mustCreate(b, "bench", 4)
			prod := tb.client(b, writerKey, kgo.DefaultProduceTopic("bench"), kgo.ProducerLinger(5*time.Millisecond),
				kgo.ProducerBatchCompression(kgo.NoCompression()))
			value := make([]byte, size)
			rand.Read(value)
			ctx := testCtx(b)
			for range b.N {
				prod.Produce(ctx, &kgo.Record{Value: value}, nil)
			}
			if err := prod.Flush(ctx); err != nil {
				b.Fatal(err)
			}
			cons := tb.client(b, readerKey, kgo.ConsumeTopics("bench"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
			b.SetBytes(int64(size))
			b.ResetTimer()
			for n := 0; n < b.N; {
				fs := cons.PollFetches(ctx)
				if err := ctx.Err(); err != nil {
					b.Fatalf("fetched %d of %d: %v", n, b.N, err)
				}
				n += fs.NumRecords()
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
		})
	}
}
