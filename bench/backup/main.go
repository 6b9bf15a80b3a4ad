// Command backup measures backup and restore of a deployment's log: it
// fills a seglog store with batches of random and of semi-compressible
// (JSON-like) records, backs it up to a directory volume and restores it
// into a new store, and prints MB/s of batch data for each.
//
//	go run ./bench/backup -size 1GiB
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"flag"
	"fmt"
	"log"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/keyline/keyline/internal/backup"
	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/streams/seglog"
)

func main() {
	size := flag.String("size", "1GiB", "batch data to fill the store with (e.g. 256MiB, 1GiB)")
	parts := flag.Int("partitions", 6, "partitions")
	work := flag.String("dir", "", "working directory (default: a new temporary directory, removed at the end)")
	chunk := flag.Int("chunk", archive.DefaultChunkSize, "sealed chunk size")
	level := flag.Int("level", 1, "zstd level: 1 fastest, 2 default, 3 better, 4 best")
	cpuprofile := flag.String("cpuprofile", "", "write CPU profiles to this prefix (.backup, .restore)")
	flag.Parse()
	total, err := parseSize(*size)
	if err != nil {
		log.Fatal(err)
	}
	root := *work
	if root == "" {
		if root, err = os.MkdirTemp("", "keyline-bench-backup-"); err != nil {
			log.Fatal(err)
		}
		defer os.RemoveAll(root)
	}
	ctx := context.Background()
	fmt.Printf("GOMAXPROCS=%d, %s of batch data in %d partitions, chunk %d KiB, zstd level %d\n", runtime.GOMAXPROCS(0), *size, *parts, *chunk>>10, *level)

	srcOpts := seglog.Options{StoreID: "dep-bench", Keys: []*seglog.DEK{{ID: "dek-1", Key: seal.RandomKey()}}}
	src, err := seglog.Open(filepath.Join(root, "src"), srcOpts)
	if err != nil {
		log.Fatal(err)
	}
	lastCPU = cpuTime()
	start := time.Now()
	batches, err := fill(ctx, src, *parts, total)
	if err != nil {
		log.Fatal(err)
	}
	report("fill", total, time.Since(start), fmt.Sprintf("%d batches", batches))

	vol, err := backup.OpenVolume(ctx, backup.VolumeConfig{Kind: "dir", DataDir: root}, "dep-bench")
	if err != nil {
		log.Fatal(err)
	}
	key, err := archive.NewLocalRootKey("crn:v1:bluemix:public:kms:us-south:a/acct:inst:key:bench", "v1", seal.RandomKey())
	if err != nil {
		log.Fatal(err)
	}

	lastCPU = cpuTime()
	stop := profile(*cpuprofile, ".backup")
	start = time.Now()
	if _, err := backup.Take(ctx, src, vol, "bench-1.kbk", key, archive.WriterOptions{BackupID: "bench-1", Created: time.Now(), ChunkSize: *chunk, Level: zstdLevel(*level)}, nil); err != nil {
		log.Fatal(err)
	}
	took := time.Since(start)
	stop()
	info, err := vol.Stat(ctx, "bench-1.kbk")
	if err != nil {
		log.Fatal(err)
	}
	report("backup", total, took, fmt.Sprintf("backup file %.0f MB (%.2f of the data)", float64(info.Size)/1e6, float64(info.Size)/float64(total)))
	src.Close()

	lastCPU = cpuTime()
	stop = profile(*cpuprofile, ".restore")
	start = time.Now()
	dstOpts := seglog.Options{StoreID: "dep-restored", Keys: []*seglog.DEK{{ID: "dek-2", Key: seal.RandomKey()}}}
	if _, err := backup.RestoreInto(ctx, vol, "bench-1.kbk", key, filepath.Join(root, "restored"), dstOpts, nil); err != nil {
		log.Fatal(err)
	}
	took = time.Since(start)
	stop()
	report("restore", total, took, "into a new store, synced")
}

func zstdLevel(n int) zstd.EncoderLevel { return zstd.EncoderLevel(n) }

// report prints the rate, and the CPU time the phase used, which says how
// the figure would change on a machine that is not shared.
func report(what string, bytes int64, d time.Duration, note string) {
	cpu := cpuTime()
	used := cpu - lastCPU
	lastCPU = cpu
	fmt.Printf("%-8s %8.1f MB/s  %6.2f s  cpu %5.2f s (%.0f MB per cpu-second)  %s\n", what, float64(bytes)/1e6/d.Seconds(), d.Seconds(), used.Seconds(), float64(bytes)/1e6/used.Seconds(), note)
}

var lastCPU time.Duration

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func profile(prefix, suffix string) func() {
	if prefix == "" {
		return func() {}
	}
	f, err := os.Create(prefix + suffix)
	if err != nil {
		log.Fatal(err)
	}
	pprof.StartCPUProfile(f)
	return func() { pprof.StopCPUProfile(); f.Close() }
}

func parseSize(s string) (int64, error) {
	mult := int64(1)
	for suffix, m := range map[string]int64{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if strings.HasSuffix(s, suffix) {
			s, mult = strings.TrimSuffix(s, suffix), m
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n * mult, err
}

// fill appends batches of 1 KiB to 256 KiB (as producers with linger
// send them), alternating between partitions, until total bytes of batch
// data are in. Half the batches are random bytes (already compressed or
// encrypted payloads), half JSON events with a random session token, which
// zstd's fastest level shrinks to about a third.
func fill(ctx context.Context, s *seglog.Store, parts int, total int64) (int, error) {
	rng := mrand.New(mrand.NewPCG(7, 7))
	random := make([]byte, 32<<20)
	rand.Read(random)
	text := jsonEvents(rng, 32<<20)
	ps := make([]*seglog.Partition, parts)
	for i := range ps {
		var err error
		if ps[i], err = s.Partition(fmt.Sprintf("events-%d", i), true); err != nil {
			return 0, err
		}
	}
	n := 0
	for done := int64(0); done < total; n++ {
		size := min(1<<10+rng.IntN(255<<10), int(total-done))
		pool := random
		if rng.IntN(2) == 0 {
			pool = text
		}
		off := rng.IntN(len(pool) - size)
		m := seglog.BatchMeta{Records: int32(1 + size/400), FirstTimestamp: time.Now().UnixMilli(), MaxTimestamp: time.Now().UnixMilli(), ProducerID: -1, BaseSequence: -1}
		if _, err := ps[n%parts].Append(ctx, m, pool[off:off+size]); err != nil {
			return n, err
		}
		done += int64(size)
	}
	return n, nil
}

func jsonEvents(rng *mrand.Rand, size int) []byte {
	statuses := []string{"created", "paid", "shipped", "delivered", "returned"}
	token := make([]byte, 24)
	b := make([]byte, 0, size+512)
	for len(b) < size {
		for i := range token {
			token[i] = byte(rng.Uint32())
		}
		b = fmt.Appendf(b, `{"order_id":"o-%08d","customer":"c-%06d","status":"%s","amount":%d.%02d,"currency":"EUR","items":%d,"ts":%d,"session":"%s"}`+"\n",
			rng.IntN(1e8), rng.IntN(1e6), statuses[rng.IntN(len(statuses))], rng.IntN(5000), rng.IntN(100), 1+rng.IntN(9), 1700000000000+rng.Int64N(1e10), base64.StdEncoding.EncodeToString(token))
	}
	return b[:size]
}
