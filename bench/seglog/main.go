// Command seglog measures the encrypted log: append throughput sealed and
// unsealed (the benchmark-only mode) with and without fsync, read
// throughput, and re-encryption speed, and prints what encryption costs.
//
// Sealed and unsealed trials alternate and the median is reported, so that
// noise from a shared machine falls on both sides alike. Besides MB/s it
// prints the process CPU time per MB appended, which a busy machine
// disturbs much less than wall time.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"os"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/keyline/keyline/internal/streams/seglog"
)

func main() {
	mb := flag.Int("mb", 32, "MiB appended per trial without fsync (a quarter of it with fsync)")
	rounds := flag.Int("rounds", 3, "trials per mode; the median is reported")
	writers := flag.Int("writers", 8, "concurrent writers (over 4 partitions) in the fsync trials")
	flag.Parse()
	b := bench{mb: *mb, writers: *writers}

	fmt.Printf("%-8s %-6s %12s %14s %8s %16s %18s %8s\n", "batch", "fsync", "sealed MB/s", "unsealed MB/s", "cost", "sealed CPU ms/MB", "unsealed CPU ms/MB", "cost")
	for _, fsync := range []bool{false, true} {
		for _, size := range []int{100, 1 << 10, 16 << 10, 256 << 10} {
			if fsync && size < 1<<10 {
				continue
			}
			var sealed, unsealed, sealedCPU, unsealedCPU []float64
			for range *rounds {
				r, c := b.append(size, fsync, false)
				sealed, sealedCPU = append(sealed, r), append(sealedCPU, c)
				r, c = b.append(size, fsync, true)
				unsealed, unsealedCPU = append(unsealed, r), append(unsealedCPU, c)
			}
			s, u := median(sealed), median(unsealed)
			sc, uc := median(sealedCPU), median(unsealedCPU)
			fmt.Printf("%-8s %-6v %12.1f %14.1f %7.1f%% %16.3f %18.3f %7.1f%%\n", sizeName(size), fsync, s, u, 100*(u-s)/u, sc, uc, 100*(sc-uc)/sc)
		}
	}
	var rs, ru []float64
	for range *rounds {
		rs = append(rs, b.read(16<<10, false))
		ru = append(ru, b.read(16<<10, true))
	}
	fmt.Printf("read 16KiB batches: sealed %.1f MB/s, unsealed %.1f MB/s\n", median(rs), median(ru))
	fmt.Printf("re-encryption: %.1f MB/s\n", b.reencrypt())
}

type bench struct {
	mb      int
	writers int
}

func dek(id string) *seglog.DEK {
	k := make([]byte, 32)
	rand.Read(k)
	return &seglog.DEK{ID: id, Key: k}
}

func (b bench) open(unsealed, fsync bool) (*seglog.Store, func()) {
	dir, err := os.MkdirTemp("", "seglog-bench-")
	if err != nil {
		log.Fatal(err)
	}
	s, err := seglog.Open(dir, seglog.Options{StoreID: "bench", Keys: []*seglog.DEK{dek("bench")}, Unsealed: unsealed, Sync: fsync})
	if err != nil {
		log.Fatal(err)
	}
	return s, func() { s.Close(); os.RemoveAll(dir) }
}

// append returns MB/s of batch data appended and CPU milliseconds per MB.
// With fsync, writers append concurrently to four partitions and share
// fsyncs.
func (b bench) append(size int, fsync, unsealed bool) (float64, float64) {
	s, done := b.open(unsealed, fsync)
	defer done()
	total := b.mb << 20
	writers := 1
	if fsync {
		total /= 4
		writers = b.writers
	}
	data := make([]byte, size)
	rand.Read(data)
	perWriter := total / size / writers
	var wg sync.WaitGroup
	cpu0 := cpuTime()
	start := time.Now()
	for w := range writers {
		p, err := s.Partition(fmt.Sprintf("p%d", w%4), true)
		if err != nil {
			log.Fatal(err)
		}
		wg.Go(func() {
			for range perWriter {
				if _, err := p.Append(context.Background(), seglog.BatchMeta{Records: 10}, data); err != nil {
					log.Fatal(err)
				}
			}
		})
	}
	wg.Wait()
	n := perWriter * writers * size
	return mbps(n, time.Since(start)), float64((cpuTime() - cpu0).Milliseconds()) / (float64(n) / 1e6)
}

// cpuTime is the user and system time the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (b bench) read(size int, unsealed bool) float64 {
	s, done := b.open(unsealed, false)
	defer done()
	p, _ := s.Partition("p", true)
	data := make([]byte, size)
	rand.Read(data)
	for range (b.mb << 20) / size {
		p.Append(context.Background(), seglog.BatchMeta{Records: 1}, data)
	}
	start := time.Now()
	n := 0
	for from := int64(0); from < p.EndOffset(); {
		bs, err := p.Read(context.Background(), from, 1<<20)
		if err != nil {
			log.Fatal(err)
		}
		for _, x := range bs {
			n += len(x.Data)
		}
		from = bs[len(bs)-1].Meta.LastOffset() + 1
	}
	return mbps(n, time.Since(start))
}

func (b bench) reencrypt() float64 {
	s, done := b.open(false, false)
	defer done()
	data := make([]byte, 16<<10)
	rand.Read(data)
	for i := range 4 {
		p, _ := s.Partition(fmt.Sprintf("p%d", i), true)
		for range (b.mb << 20) / 4 / len(data) {
			p.Append(context.Background(), seglog.BatchMeta{Records: 1}, data)
		}
	}
	size := s.SizeBytes()
	start := time.Now()
	if err := s.ReencryptTo(context.Background(), dek("bench-2"), nil); err != nil {
		log.Fatal(err)
	}
	return mbps(int(size), time.Since(start))
}

func mbps(n int, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }

func median(xs []float64) float64 {
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func sizeName(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
