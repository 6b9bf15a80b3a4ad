package broker

import (
	"crypto/rand"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
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

// BenchmarkConcurrentFetchMemory has 50 fetchers read a 24 MiB topic at
// once, asking for everything (MaxBytes 2^31-1), and reports the most the
// fetch responses held at once (the broker's gauge) and the heap's
// high-water mark, with an unbounded budget (as before the budget) and
// with the default one.
func BenchmarkConcurrentFetchMemory(b *testing.B) {
	for _, bc := range []struct {
		name   string
		budget int64
	}{{"unbounded", 1 << 40}, {"default", DefaultFetchMemory}} {
		b.Run(bc.name, func(b *testing.B) {
			tb := startBroker(b, nil, func(c *Config) { c.FetchMemory = bc.budget })
			fill(b, tb, "wide", 2, 24<<20, 128<<10)
			heapPeak := sampleHeapPeak(b)
			b.ResetTimer()
			for range b.N {
				var wg sync.WaitGroup
				for range 50 {
					wg.Go(func() {
						if err := readAll(longCtx(b), tb, "wide", 2, 5000); err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
			}
			b.StopTimer()
			b.ReportMetric(float64(tb.FetchMemory().Peak)/(1<<20), "fetch-peak-MiB")
			b.ReportMetric(float64(heapPeak())/(1<<20), "heap-peak-MiB")
		})
	}
}

// sampleHeapPeak samples the heap's live objects every few milliseconds
// until the returned func is called, which reports the most seen.
func sampleHeapPeak(b *testing.B) func() uint64 {
	runtime.GC()
	stop, done := make(chan struct{}), make(chan uint64)
	go func() {
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		var peak uint64
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(s)
			peak = max(peak, s[0].Value.Uint64())
			select {
			case <-stop:
				done <- peak
				return
			case <-tick.C:
			}
		}
	}()
	var once sync.Once
	var peak uint64
	report := func() uint64 {
		once.Do(func() { close(stop); peak = <-done })
		return peak
	}
	b.Cleanup(func() { report() })
	return report
}
