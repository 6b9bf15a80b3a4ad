package seglog

import (
	"context"
	"fmt"
	"testing"
)

// Benchmarks report MB/s of batch data. Compare sealed with unsealed (the
// benchmark-only mode) to see what encryption costs.

var benchSizes = []int{100, 1 << 10, 16 << 10, 256 << 10, 1 << 20}

func sizeName(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

func modeName(unsealed bool) string {
	if unsealed {
		return "unsealed"
	}
	return "sealed"
}

func benchStore(b *testing.B, unsealed, sync bool) *Store {
	return openStore(b, b.TempDir(), Options{Keys: []*DEK{newDEK(b, "bench")}, Unsealed: unsealed, Sync: sync})
}

// trimEvery keeps the benchmark's disk use bounded.
const trimEvery = 256 << 20

func BenchmarkAppend(b *testing.B) {
	for _, sync := range []bool{false, true} {
		for _, size := range benchSizes {
			for _, unsealed := range []bool{false, true} {
				name := fmt.Sprintf("sync=%v/%s/%s", sync, sizeName(size), modeName(unsealed))
				b.Run(name, func(b *testing.B) {
					s := benchStore(b, unsealed, sync)
					p := mustPartition(b, s, "p")
					data := batchData(0, size)
					ctx := context.Background()
					b.SetBytes(int64(size))
					written := 0
					for b.Loop() {
						if _, err := p.Append(ctx, BatchMeta{Records: 10}, data); err != nil {
							b.Fatal(err)
						}
						if written += size; written > trimEvery {
							b.StopTimer()
							p.DeleteBefore(p.EndOffset())
							written = 0
							b.StartTimer()
						}
					}
				})
			}
		}
	}
}

// BenchmarkAppendParallel shows group commit: with Sync, writers on several
// partitions share fsyncs.
func BenchmarkAppendParallel(b *testing.B) {
	for _, size := range []int{1 << 10, 16 << 10} {
		for _, unsealed := range []bool{false, true} {
			b.Run(fmt.Sprintf("sync=true/%s/%s", sizeName(size), modeName(unsealed)), func(b *testing.B) {
				s := benchStore(b, unsealed, true)
				parts := []*Partition{mustPartition(b, s, "p0"), mustPartition(b, s, "p1"), mustPartition(b, s, "p2"), mustPartition(b, s, "p3")}
				data := batchData(0, size)
				b.SetBytes(int64(size))
				b.SetParallelism(8)
				next := make(chan int, 64)
				go func() {
					for i := 0; ; i++ {
						next <- i
					}
				}()
				b.RunParallel(func(pb *testing.PB) {
					p := parts[<-next%len(parts)]
					for pb.Next() {
						if _, err := p.Append(context.Background(), BatchMeta{Records: 10}, data); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

func BenchmarkRead(b *testing.B) {
	for _, size := range benchSizes[1:] {
		for _, unsealed := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/%s", sizeName(size), modeName(unsealed)), func(b *testing.B) {
				s := benchStore(b, unsealed, false)
				p := mustPartition(b, s, "p")
				data := batchData(0, size)
				for range (64 << 20) / size {
					p.Append(context.Background(), BatchMeta{Records: 1}, data)
				}
				// ReadAppend into a reused buffer, as the broker's fetch does.
				b.SetBytes(1 << 20)
				from := int64(0)
				var buf []byte
				for b.Loop() {
					var metas []BatchMeta
					var err error
					buf, _, metas, err = p.ReadAppend(context.Background(), from, 1<<20, buf[:0])
					if err != nil {
						b.Fatal(err)
					}
					if from = metas[len(metas)-1].LastOffset() + 1; from >= p.EndOffset() {
						from = 0
					}
				}
			})
		}
	}
}

// BenchmarkReencrypt rewrites a 64 MiB log under a new key per iteration.
func BenchmarkReencrypt(b *testing.B) {
	s := benchStore(b, false, false)
	for i := range 4 {
		p := mustPartition(b, s, fmt.Sprintf("p%d", i))
		data := batchData(0, 16<<10)
		for range (16 << 20) / len(data) {
			p.Append(context.Background(), BatchMeta{Records: 1}, data)
		}
	}
	b.SetBytes(s.SizeBytes())
	i := 0
	for b.Loop() {
		i++
		if err := s.ReencryptTo(context.Background(), newDEK(b, fmt.Sprintf("bench-%d", i)), nil); err != nil {
			b.Fatal(err)
		}
	}
}
