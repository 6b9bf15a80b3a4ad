// Command streams measures an Event Streams deployment's data plane with a
// real franz-go client over loopback: produce and consume records/s and MB/s
// for 100-byte and 1 KiB records on 1 and 6 partitions (acks=all,
// idempotent), for the broker over the encrypted log, over the same log with
// encryption switched off (seglog's benchmark-only Unsealed mode), and for
// franz-go's in-memory kfake cluster as a reference; then produce latency,
// re-encryption speed under load, and the time from a key's force delete to
// the last Kafka connection closed, through a whole Keyline server. With
// -cluster it compares keyline serve on local disk with one and three
// cluster nodes (PostgreSQL and an S3 bucket) instead.
//
// Client and broker share the machine, so the figures are end to end. Values
// are random (incompressible) and sent uncompressed.
package main

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/keyline/keyline/internal/streams/broker"
	"github.com/keyline/keyline/internal/streams/seglog"
)

func main() {
	seconds := flag.Float64("seconds", 3, "how long each produce run lasts")
	cpuprofile := flag.String("cpuprofile", "", "write CPU profiles of the keyline brokers' first round to <this>.<sealed|unsealed>.<size>.<partitions>.produce and .consume")
	only := flag.String("only", "", "run only this part: throughput, latency, transactions, reencrypt, compaction, shred, or objectstore (not in the default run)")
	objectDB := flag.String("object-store-db", "", "with -only objectstore: the PostgreSQL URL of the objects' index (default: SQLite in a temporary directory); with -cluster: a PostgreSQL database to make the nodes' schemas in (default: a throwaway PostgreSQL)")
	clusterRun := flag.Bool("cluster", false, "run only the comparison of keyline serve on local disk, one cluster node and three cluster nodes (PostgreSQL + versitygw)")
	rounds := flag.Int("rounds", 3, "rounds of each throughput run; medians are reported")
	verbose := flag.Bool("v", false, "print every round's figures to stderr, not only the medians")
	sizes := flag.String("sizes", "100,1024", "record sizes of the throughput runs, comma-separated")
	parts := flag.String("partitions", "1,6", "partition counts of the throughput runs, comma-separated")
	flag.Parse()
	b := &bench{produceFor: time.Duration(*seconds * float64(time.Second)), cpuprofile: *cpuprofile, rounds: max(*rounds, 1),
		verbose: *verbose, sizes: intList("sizes", *sizes), parts: intList("partitions", *parts)}
	tmp, err := os.MkdirTemp("", "bench-streams")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(tmp)
	atExit(func() { os.RemoveAll(tmp) })
	b.tmp = tmp

	if *clusterRun {
		b.cluster(*objectDB)
		return
	}
	if *only == "" || *only == "throughput" {
		b.throughput()
	}
	if *only == "" || *only == "latency" {
		b.latency()
	}
	if *only == "" || *only == "transactions" {
		b.transactions()
	}
	if *only == "" || *only == "reencrypt" {
		b.reencrypt()
	}
	if *only == "" || *only == "compaction" {
		b.compaction()
	}
	if *only == "" || *only == "shred" {
		b.shred()
	}
	// Not in the default run: it needs versitygw, and PostgreSQL to be
	// what a cluster runs.
	if *only == "objectstore" {
		b.objectStore(*objectDB)
	}
}

type bench struct {
	tmp        string
	produceFor time.Duration
	cpuprofile string
	rounds     int
	verbose    bool
	sizes      []int
	parts      []int
	n          int
}

// intList parses a comma-separated list of positive integers, or exits
// saying which flag is wrong.
func intList(name, s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			fatalf("-%s: %q is not a positive integer", name, f)
		}
		out = append(out, n)
	}
	return out
}

// target is a running Kafka endpoint to measure.
type target struct {
	addr   string
	seeds  []string // when set, instead of addr
	sasl   bool
	login  kgo.Opt        // when set, instead of sasl's bench key
	store  *seglog.Store  // nil for kfake
	broker *broker.Broker // nil for kfake
	close  func()
}

const benchKey = "bench-api-key"

// keyline starts a broker over a fresh store, sealed or not, syncing as a
// deployment does.
func (b *bench) keyline(unsealed bool) *target {
	b.n++
	dir := fmt.Sprintf("%s/store-%d", b.tmp, b.n)
	opts := seglog.Options{StoreID: "bench", Sync: os.Getenv("BENCH_NOSYNC") == "", Unsealed: unsealed}
	if !unsealed {
		key := make([]byte, 32)
		rand.Read(key)
		opts.Keys = []*seglog.DEK{{ID: "dek-bench", Key: key}}
	}
	st, err := seglog.Open(dir, opts)
	if err != nil {
		fatal(err)
	}
	t := serveBroker(broker.StorageOf(st), func() {
		st.Close()
		os.RemoveAll(dir)
	})
	t.store = st
	return t
}

// serveBroker serves a broker over storage; closing the target stops it,
// then runs cleanup.
func serveBroker(storage broker.Storage, cleanup func()) *target {
	brk, err := broker.New(broker.Config{Addr: "127.0.0.1:0", Storage: storage, ClusterID: "bench",
		Logger: slog.New(slog.DiscardHandler),
		Authenticate: func(_ context.Context, user, pass string) (broker.Access, error) {
			if user == "token" && pass == benchKey {
				return broker.Manager, nil
			}
			return broker.NoAccess, fmt.Errorf("the API key is not valid")
		}})
	if err != nil {
		fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); brk.Serve(context.Background()) }()
	return &target{addr: brk.Addr().String(), sasl: true, broker: brk, close: func() {
		brk.Close()
		<-done
		cleanup()
	}}
}

func kfakeCluster() *target {
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		fatal(err)
	}
	return &target{addr: c.ListenAddrs()[0], close: c.Close}
}

func (t *target) client(opts ...kgo.Opt) *kgo.Client {
	seeds := t.seeds
	if seeds == nil {
		seeds = []string{t.addr}
	}
	all := []kgo.Opt{kgo.SeedBrokers(seeds...), kgo.ProducerLinger(5 * time.Millisecond),
		kgo.ProducerBatchCompression(kgo.NoCompression()), kgo.MaxBufferedRecords(1 << 16)}
	switch {
	case t.login != nil:
		all = append(all, t.login)
	case t.sasl:
		all = append(all, kgo.SASL(plain.Auth{User: "token", Pass: benchKey}.AsMechanism()))
	}
	cl, err := kgo.NewClient(append(all, opts...)...)
	if err != nil {
		fatal(err)
	}
	return cl
}

func (t *target) createTopic(name string, partitions int32, opts ...kgo.Opt) {
	cl := t.client(opts...)
	defer cl.Close()
	resp, err := kadm.NewClient(cl).CreateTopics(context.Background(), partitions, 1, nil, name)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		fatalf("create topic: %v", err)
	}
}

// values is a pool of random values of one size.
func values(size int) [][]byte {
	out := make([][]byte, 4096)
	for i := range out {
		out[i] = make([]byte, size)
		rand.Read(out[i])
	}
	return out
}

// cpuTime is the CPU time this process (client and broker) has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type result struct {
	produceCPU, consumeCPU float64 // CPU µs per record, client and broker together
	produced               int
	produceRate            float64 // records/s
	consumeRate            float64
	size                   int
	p50, p99, pMax         time.Duration // time from Produce to acknowledgement, under load
	produceMB, consMB      float64
}

// run produces for b.produceFor as fast as the client goes, then consumes
// everything from the start.
func (b *bench) run(t *target, topic string, partitions int32, size int, profile string) result {
	t.createTopic(topic, partitions)
	vals := values(size)
	prod := t.client(kgo.DefaultProduceTopic(topic))
	defer prod.Close()
	ctx := context.Background()
	var acked, failed atomic.Int64
	var latMu sync.Mutex
	lats := make([]time.Duration, 0, 1<<16)
	stop := func() {}
	if profile != "" {
		stop = startProfile(profile + ".produce")
	}
	start, cpu0 := time.Now(), cpuTime()
	n := 0
	for time.Since(start) < b.produceFor {
		for range 256 {
			sent := time.Now()
			sample := n%64 == 0
			prod.Produce(ctx, &kgo.Record{Value: vals[n%len(vals)]}, func(_ *kgo.Record, err error) {
				if err != nil {
					failed.Add(1)
					return
				}
				acked.Add(1)
				if sample {
					d := time.Since(sent)
					latMu.Lock()
					lats = append(lats, d)
					latMu.Unlock()
				}
			})
			n++
		}
	}
	if err := prod.Flush(ctx); err != nil {
		fatal(err)
	}
	took := time.Since(start)
	produceCPU := cpuTime() - cpu0
	stop()
	if failed.Load() > 0 {
		fatalf("%d records failed", failed.Load())
	}
	r := result{produced: n, size: size, produceRate: float64(n) / took.Seconds(), produceCPU: float64(produceCPU.Microseconds()) / float64(n)}
	slices.Sort(lats)
	if len(lats) > 0 {
		r.p50, r.p99, r.pMax = lats[len(lats)/2], lats[len(lats)*99/100], lats[len(lats)-1]
	}

	cons := t.client(kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(64<<20))
	defer cons.Close()
	if profile != "" {
		stop = startProfile(profile + ".consume")
	}
	start, cpu0 = time.Now(), cpuTime()
	got := 0
	for got < n {
		fs := cons.PollFetches(ctx)
		fs.EachError(func(_ string, _ int32, err error) { fatalf("fetch: %v", err) })
		got += fs.NumRecords()
	}
	r.consumeRate = float64(n) / time.Since(start).Seconds()
	r.consumeCPU = float64((cpuTime() - cpu0).Microseconds()) / float64(n)
	stop()
	r.produceMB = r.produceRate * float64(size) / 1e6
	r.consMB = r.consumeRate * float64(size) / 1e6
	return r
}

func (b *bench) throughput() {
	fmt.Printf("== throughput: franz-go, acks=all, idempotent, linger 5ms, no compression, random values; median of %d rounds ==\n", b.rounds)
	fmt.Printf("%-18s %5s %5s %13s %8s %9s %13s %8s %9s %10s %10s\n", "broker", "size", "parts", "produce rec/s", "MB/s", "CPU µs/r", "consume rec/s", "MB/s", "CPU µs/r", "p50 ack*", "p99 ack*")
	type key struct {
		size  int
		parts int32
	}
	results := map[string]map[key]result{}
	perRound := map[key]map[string][]result{}
	var aesSeal, aesOpen []float64
	kinds := []string{"keyline sealed", "keyline unsealed", "kfake (memory)"}
	for _, size := range b.sizes {
		for _, p := range b.parts {
			parts := int32(p)
			rounds := map[string][]result{}
			// Kinds alternate within a round so that noise from a shared
			// machine falls on all of them alike.
			for round := range b.rounds {
				seal, open := aesGCMRates(100 * time.Millisecond)
				aesSeal, aesOpen = append(aesSeal, seal), append(aesOpen, open)
				if b.verbose {
					fmt.Fprintf(os.Stderr, "round %d AES-256-GCM alone: seal %.2f GB/s, open %.2f GB/s\n", round, seal/1e9, open/1e9)
				}
				for i := range kinds {
					kind := kinds[(i+round)%len(kinds)]
					var t *target
					switch kind {
					case "keyline sealed":
						t = b.keyline(false)
					case "keyline unsealed":
						t = b.keyline(true)
					default:
						t = kfakeCluster()
					}
					profile := ""
					if kind != "kfake (memory)" && b.cpuprofile != "" && round == 0 {
						profile = fmt.Sprintf("%s.%s.%d.%d", b.cpuprofile, strings.Fields(kind)[1], size, parts)
					}
					r := b.run(t, "bench", parts, size, profile)
					if b.verbose {
						fmt.Fprintf(os.Stderr, "round %d %-16s produce %9.0f rec/s %.3f µs/r, consume %9.0f rec/s %.3f µs/r\n",
							round, kind, r.produceRate, r.produceCPU, r.consumeRate, r.consumeCPU)
					}
					rounds[kind] = append(rounds[kind], r)
					t.close()
					settleDisk()
				}
			}
			perRound[key{size, parts}] = rounds
			for _, kind := range kinds {
				r := medianResult(rounds[kind])
				if results[kind] == nil {
					results[kind] = map[key]result{}
				}
				results[kind][key{size, parts}] = r
				fmt.Printf("%-18s %5d %5d %13.0f %8.1f %9.3f %13.0f %8.1f %9.3f %10s %10s\n", kind, size, parts, r.produceRate, r.produceMB, r.produceCPU,
					r.consumeRate, r.consMB, r.consumeCPU, r.p50.Round(100*time.Microsecond), r.p99.Round(100*time.Microsecond))
			}
		}
	}
	fmt.Println("CPU µs/r: CPU time of the whole process (franz-go client and broker) per record, which a busy machine disturbs far less than rates")
	fmt.Println("* from Produce to acknowledgement at full speed: mostly time queued in the client's buffer")
	fmt.Println("-- ratios (produce / consume), each the median over rounds of the ratio within a round, [lowest, highest] --")
	for _, size := range b.sizes {
		for _, p := range b.parts {
			rs := perRound[key{size, int32(p)}]
			s, u, f := rs["keyline sealed"], rs["keyline unsealed"], rs["kfake (memory)"]
			cost := func(rate func(result) float64) string {
				return pairedRatio(s, u, func(a, b result) float64 { return 100 * (1 - rate(a)/rate(b)) }, "%.1f%%")
			}
			more := func(cpu func(result) float64) string {
				return pairedRatio(s, u, func(a, b result) float64 { return 100 * (cpu(a)/cpu(b) - 1) }, "%.1f%%")
			}
			vs := func(rate func(result) float64) string {
				return pairedRatio(s, f, func(a, b result) float64 { return rate(a) / rate(b) }, "%.2fx")
			}
			produce, consume := func(r result) float64 { return r.produceRate }, func(r result) float64 { return r.consumeRate }
			fmt.Printf("%4dB x%d: encryption costs %s / %s of throughput and %s / %s more CPU per record; sealed vs kfake %s / %s\n", size, p,
				cost(produce), cost(consume), more(func(r result) float64 { return r.produceCPU }), more(func(r result) float64 { return r.consumeCPU }),
				vs(produce), vs(consume))
		}
	}
	slices.Sort(aesSeal)
	slices.Sort(aesOpen)
	seal, open := aesSeal[len(aesSeal)/2], aesOpen[len(aesOpen)/2]
	fmt.Printf("AES-256-GCM alone on this CPU (1 MiB blocks, Go's crypto/aes), measured before every round: seal %.2f GB/s [%.2f, %.2f], open %.2f GB/s [%.2f, %.2f]; at the medians %.3f / %.3f µs per KiB record:\n"+
		"the least CPU encryption can add per record, which the sealed broker's extra CPU per record is to be read against. On a virtual\n"+
		"machine whose cores are shared, this rate moves with the neighbours' load, and encryption's cost in throughput with it\n",
		seal/1e9, aesSeal[0]/1e9, aesSeal[len(aesSeal)-1]/1e9, open/1e9, aesOpen[0]/1e9, aesOpen[len(aesOpen)-1]/1e9, 1024/seal*1e6, 1024/open*1e6)
}

// aesGCMRates measures AES-256-GCM seal and open in bytes per second over
// 1 MiB blocks, the cost floor of the sealed log.
func aesGCMRates(d time.Duration) (seal, open float64) {
	key := make([]byte, 32)
	rand.Read(key)
	blk, err := aes.NewCipher(key)
	if err != nil {
		fatal(err)
	}
	gcm, err := cipher.NewGCM(blk)
	if err != nil {
		fatal(err)
	}
	// A counter nonce: never the same twice under this key, as in the log.
	var counter uint64
	nonce := make([]byte, gcm.NonceSize())
	next := func() []byte { counter++; binary.BigEndian.PutUint64(nonce[4:], counter); return nonce }
	plain := make([]byte, 1<<20)
	var sealed []byte
	rate := func(f func()) float64 {
		start, n := time.Now(), 0
		for ; time.Since(start) < d; n++ {
			f()
		}
		return float64(n*len(plain)) / time.Since(start).Seconds()
	}
	seal = rate(func() { sealed = gcm.Seal(sealed[:0], next(), plain, nil) })
	open = rate(func() {
		if _, err := gcm.Open(plain[:0], nonce, sealed, nil); err != nil {
			fatal(err)
		}
	})
	return seal, open
}

// pairedRatio computes f(a[i], b[i]) for each round i, where a and b ran
// back to back, so slow drifts of a shared machine fall on both, and
// formats the median with the lowest and highest.
func pairedRatio(a, b []result, f func(a, b result) float64, format string) string {
	vs := make([]float64, len(a))
	for i := range a {
		vs[i] = f(a[i], b[i])
	}
	slices.Sort(vs)
	return fmt.Sprintf(format+" ["+format+", "+format+"]", vs[len(vs)/2], vs[0], vs[len(vs)-1])
}

// medianResult takes each figure's median over the rounds.
func medianResult(rs []result) result {
	med := func(f func(result) float64) float64 {
		vs := make([]float64, len(rs))
		for i, r := range rs {
			vs[i] = f(r)
		}
		slices.Sort(vs)
		return vs[len(vs)/2]
	}
	out := rs[0]
	out.produceRate = med(func(r result) float64 { return r.produceRate })
	out.consumeRate = med(func(r result) float64 { return r.consumeRate })
	out.produceMB = out.produceRate * float64(out.size) / 1e6
	out.consMB = out.consumeRate * float64(out.size) / 1e6
	out.produceCPU = med(func(r result) float64 { return r.produceCPU })
	out.consumeCPU = med(func(r result) float64 { return r.consumeCPU })
	out.p50 = time.Duration(med(func(r result) float64 { return float64(r.p50) }))
	out.p99 = time.Duration(med(func(r result) float64 { return float64(r.p99) }))
	return out
}

// latency produces one record at a time (acks=all, fsync) and reports the
// round trip.
func (b *bench) latency() {
	t := b.keyline(false)
	defer t.close()
	t.createTopic("latency", 1)
	cl := t.client(kgo.DefaultProduceTopic("latency"), kgo.ProducerLinger(0))
	defer cl.Close()
	val := values(100)[0]
	var lats []time.Duration
	ctx := context.Background()
	for i := range 2000 {
		start := time.Now()
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: val}).FirstErr(); err != nil {
			fatal(err)
		}
		if i >= 100 {
			lats = append(lats, time.Since(start))
		}
	}
	slices.Sort(lats)
	fmt.Printf("== produce latency, one 100-byte record at a time, acks=all + fsync (sealed): p50 %v, p99 %v, max %v ==\n",
		lats[len(lats)/2].Round(time.Microsecond), lats[len(lats)*99/100].Round(time.Microsecond), lats[len(lats)-1].Round(time.Microsecond))
}

// reencrypt fills a sealed log, then re-encrypts it under a new DEK while a
// producer keeps writing.
func (b *bench) reencrypt() {
	t := b.keyline(false)
	defer t.close()
	t.createTopic("reenc", 6)
	vals := values(1024)
	prod := t.client(kgo.DefaultProduceTopic("reenc"))
	defer prod.Close()
	ctx := context.Background()
	for i := range 300_000 {
		prod.Produce(ctx, &kgo.Record{Value: vals[i%len(vals)]}, nil)
	}
	if err := prod.Flush(ctx); err != nil {
		fatal(err)
	}
	before := t.store.SizeBytes()
	var live atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				prod.Flush(ctx)
				return
			default:
			}
			prod.Produce(ctx, &kgo.Record{Value: vals[i%len(vals)]}, func(_ *kgo.Record, err error) {
				if err == nil {
					live.Add(1)
				}
			})
		}
	})
	time.Sleep(200 * time.Millisecond) // the producer is at speed
	key := make([]byte, 32)
	rand.Read(key)
	live.Store(0)
	start := time.Now()
	var total int64
	if err := t.store.ReencryptTo(ctx, &seglog.DEK{ID: "dek-next", Key: key}, func(done, all int64) { total = all }); err != nil {
		fatal(err)
	}
	took := time.Since(start)
	produced := live.Load()
	close(stop)
	wg.Wait()
	fmt.Printf("== re-encryption under load: %.0f MB (of %.0f MB stored) in %v = %.1f MB/s, while producing %.0f rec/s of 1 KiB ==\n",
		float64(total)/1e6, float64(before)/1e6, took.Round(time.Millisecond), float64(total)/1e6/took.Seconds(), float64(produced)/took.Seconds())
}

// startProfile writes a CPU profile to path until the returned func is called.
func startProfile(path string) func() {
	f, err := os.Create(path)
	if err != nil {
		fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fatal(err)
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// settleDisk flushes what the last run left in the page cache (and the
// discards of its deleted files) before the next run starts, so that no run
// pays for its predecessor's writeback: at 1 KiB a run writes gigabytes,
// more than this machine's disk absorbs at the rate the broker produces it.
func settleDisk() {
	start := time.Now()
	syscall.Sync()
	// kfake keeps a run's records on the heap; hand that memory back now
	// rather than in the middle of the next run.
	debug.FreeOSMemory()
	if d := time.Since(start); d > time.Second {
		fmt.Fprintf(os.Stderr, "settling the disk took %s\n", d.Round(time.Millisecond))
	}
}

// cleanups undo what the run started outside this process (processes,
// a PostgreSQL server, schemas), most recent first, when it fails.
var (
	cleanupMu sync.Mutex
	cleanups  []func()
)

// atExit registers f to run if the run fails (fatal, fatalf); a run that
// ends normally undoes its work itself.
func atExit(f func()) {
	cleanupMu.Lock()
	cleanups = append(cleanups, f)
	cleanupMu.Unlock()
}

func fatal(v ...any) { log.Print(v...); exit() }

func fatalf(format string, v ...any) { log.Printf(format, v...); exit() }

// exit runs the cleanups once and exits with status 1.
func exit() {
	cleanupMu.Lock()
	fs := cleanups
	cleanups = nil
	cleanupMu.Unlock()
	for i := len(fs) - 1; i >= 0; i-- {
		fs[i]()
	}
	os.Exit(1)
}
