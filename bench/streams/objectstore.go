package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/broker"
	"github.com/keyline/keyline/internal/streams/objlog"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// objectStore compares one node over local disk (seglog, fsync) with one
// node over object storage (objlog: versitygw on this machine and the
// objects' index in PostgreSQL at dbURL, or SQLite): throughput, then
// produce latency with a few producers each waiting for its
// acknowledgement, the figure the 50 ms p99 target is about.
func (b *bench) objectStore(dbURL string) {
	s3 := startVersityGW(b.tmp)
	atExit(s3.stop)
	defer s3.stop()
	bucket, err := objlog.NewBucket(objlog.BucketConfig{Endpoint: s3.addr, Bucket: "bench-streams", AccessKey: s3.access, SecretKey: s3.secret})
	if err != nil {
		fatal(err)
	}
	if err := bucket.EnsureBucket(context.Background()); err != nil {
		fatal(err)
	}
	db, err := store.Open(context.Background(), filepath.Join(b.tmp, "db"), dbURL)
	if err != nil {
		fatal(err)
	}
	defer db.Close()
	backend := "SQLite"
	if dbURL != "" {
		backend = "PostgreSQL"
	}
	fmt.Printf("== one node: local disk (seglog, fsync) vs object storage (objlog: versitygw on this machine, index in %s, flush window 5 ms) ==\n", backend)
	fmt.Printf("%-14s %5s %5s %13s %13s %12s %12s %12s\n", "log", "size", "parts", "produce rec/s", "consume rec/s", "p50 produce", "p99 produce", "max produce")
	n := 0
	for _, size := range b.sizes {
		for _, parts := range b.parts {
			for _, kind := range []string{"local disk", "object store"} {
				var t *target
				if kind == "local disk" {
					t = b.keyline(false)
				} else {
					n++
					t = objectTarget(db, bucket, fmt.Sprintf("bench%d", n))
				}
				r := b.run(t, "bench", int32(parts), size, "")
				lat := produceLatency(t, int32(parts), size, b.produceFor)
				t.close()
				fmt.Printf("%-14s %5d %5d %13.0f %13.0f %12s %12s %12s\n", kind, size, parts, r.produceRate, r.consumeRate,
					lat[0].Round(100*time.Microsecond), lat[1].Round(100*time.Microsecond), lat[2].Round(100*time.Microsecond))
			}
		}
	}
	fmt.Println("produce latency: 8 producers, each sending one record and waiting for its acknowledgement (acks=all), for the run's length")
}

func objectTarget(db *store.DB, bucket *objlog.Bucket, id string) *target {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	st, err := objlog.Open(context.Background(), db, bucket, objlog.Options{StoreID: id, Keys: []*seglog.DEK{{ID: "dek-bench", Key: key}}})
	if err != nil {
		fatal(err)
	}
	return serveBroker(broker.StorageOf(st), func() {
		st.Close()
		if err := objlog.Destroy(context.Background(), db, bucket, id); err != nil {
			log.Print(err)
		}
	})
}

// produceLatency runs 8 producers that each wait for every record's
// acknowledgement, and returns the p50, p99 and max.
func produceLatency(t *target, parts int32, size int, d time.Duration) [3]time.Duration {
	t.createTopic("latency", parts)
	val := values(size)[0]
	var mu sync.Mutex
	var lats []time.Duration
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			cl := t.client(kgo.DefaultProduceTopic("latency"), kgo.ProducerLinger(0))
			defer cl.Close()
			var mine []time.Duration
			for start := time.Now(); time.Since(start) < d; {
				sent := time.Now()
				if err := cl.ProduceSync(context.Background(), &kgo.Record{Value: val}).FirstErr(); err != nil {
					fatal(err)
				}
				mine = append(mine, time.Since(sent))
			}
			mu.Lock()
			lats = append(lats, mine[min(len(mine)-1, 10):]...) // without each client's first records (connections)
			mu.Unlock()
		})
	}
	wg.Wait()
	slices.Sort(lats)
	return [3]time.Duration{lats[len(lats)/2], lats[len(lats)*99/100], lats[len(lats)-1]}
}

// versityGW is an S3 server (versitygw) run for the benchmark.
type versityGW struct {
	addr, access, secret string
	cmd                  *exec.Cmd
}

func startVersityGW(tmp string) *versityGW {
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		gopath, _ := exec.Command("go", "env", "GOPATH").Output()
		bin = filepath.Join(string(bytes.TrimSpace(gopath)), "bin", "versitygw")
		if _, err := os.Stat(bin); err != nil {
			fatal("versitygw is not installed: CGO_ENABLED=0 go install github.com/versity/versitygw/cmd/versitygw@v1.8.0")
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fatal(err)
	}
	v := &versityGW{addr: l.Addr().String(), access: "benchaccess", secret: "bench-secret-key"}
	l.Close()
	dir := filepath.Join(tmp, "s3")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		fatal(err)
	}
	v.cmd = exec.Command(bin, "--port", v.addr, "--quiet", "posix", dir)
	v.cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+v.access, "ROOT_SECRET_KEY="+v.secret)
	if err := v.cmd.Start(); err != nil {
		fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", v.addr, time.Second); err == nil {
			c.Close()
			return v
		}
		if time.Now().After(deadline) {
			fatal("versitygw did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (v *versityGW) stop() {
	v.cmd.Process.Signal(syscall.SIGTERM)
	v.cmd.Wait()
}
