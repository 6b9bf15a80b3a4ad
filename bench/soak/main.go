// Command soak runs `keyline serve` as a child process and measures how its
// well-behaved clients fare next to hostile ones: first a baseline with
// franz-go producers (acks=all) and consumers and Key Protect wrap calls
// alone, then the same clients while others log in slowly, fetch with 2 GiB
// limits, dribble HTTP bodies and open more connections than the server's
// RLIMIT_NOFILE. It samples the server's RSS and open descriptors every
// second and prints them, the well-behaved clients' p99 latencies and
// errors in both phases, and a verdict: PASS when the server's peak RSS
// stays under -rss-budget, the well-behaved clients see no errors and read
// everything acknowledged, and each of their p99s under attack is within
// 2x of its baseline.
//
//	go run ./bench/soak                                   (20s baseline, 60s hostile)
//	go run ./bench/soak -duration 20s -baseline 10s -fill-mb 50
//
// Everything is on loopback; the server and its data dir go at the end,
// also on Ctrl-C. The exit status is 1 on FAIL.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"log"
	"maps"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"golang.org/x/sys/unix"

	"github.com/keyline/keyline/internal/client"
)

const (
	wellTopic = "soak"
	fillTopic = "soak-fill"
	adminKey  = "soak-admin-api-key-0123456789abcdefghijklmnopqrstu"
)

func main() {
	keyline := flag.String("keyline", "", "path of the keyline binary (default: go build ./cmd/keyline into a temporary directory)")
	baseline := flag.Duration("baseline", 20*time.Second, "how long the well-behaved clients run alone")
	duration := flag.Duration("duration", 60*time.Second, "how long they run next to the hostile clients")
	rssBudget := flag.Int64("rss-budget-mb", 1024, "the server's peak RSS must stay under this many MiB")
	rssAbort := flag.Int64("rss-abort-mb", 4096, "kill the server when its RSS passes this many MiB, to spare the machine (0: never)")
	nofile := flag.Uint64("server-nofile", 1024, "RLIMIT_NOFILE of the server (0: inherited); the hostile clients open more connections than this")
	slowLogins := flag.Int("slow-logins", 1000, "Kafka connections that never finish logging in")
	fetches := flag.Int("oversized-fetches", 50, "logged-in Kafka connections fetching everything with 2^31-1 byte limits, over and over")
	slowBodies := flag.Int("slow-bodies", 2000, "HTTP connections dribbling a request body, a byte every few seconds")
	fillMB := flag.Int("fill-mb", 200, "MB of records the oversized fetches read")
	producers := flag.Int("producers", 2, "well-behaved producers")
	consumers := flag.Int("consumers", 2, "well-behaved consumers")
	httpCallers := flag.Int("http", 2, "well-behaved Key Protect wrap callers")
	interval := flag.Duration("interval", 20*time.Millisecond, "pause between one well-behaved client's calls")
	ownKey := flag.Bool("hostile-own-key", true, "the hostile Kafka clients log in with a service credential of their own, as another application would; false: with the well-behaved clients' one, sharing their user's quotas")
	hostileNice := flag.Int("hostile-nice", 19, "run the hostile clients in a child process at this niceness, standing in for other machines (-1: in soak's own process, sharing its priority)")
	flag.Parse()
	if plan := os.Getenv(hostileEnv); plan != "" {
		if err := hostileChild(plan); err != nil {
			log.Fatal(err)
		}
		return
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ok, err := run(ctx, config{keyline: *keyline, baseline: *baseline, duration: *duration, rssBudget: *rssBudget << 20,
		rssAbort: *rssAbort << 20, nofile: *nofile, slowLogins: *slowLogins, fetches: *fetches, slowBodies: *slowBodies,
		fillMB: *fillMB, producers: *producers, consumers: *consumers, http: *httpCallers, interval: *interval,
		hostileNice: *hostileNice, ownKey: *ownKey})
	if err != nil {
		log.Print(err)
		os.Exit(2)
	}
	if !ok {
		os.Exit(1)
	}
}

type config struct {
	keyline                         string
	baseline, duration, interval    time.Duration
	rssBudget, rssAbort             int64
	nofile                          uint64
	slowLogins, fetches, slowBodies int
	fillMB                          int
	producers, consumers, http      int
	hostileNice                     int
	ownKey                          bool
}

func run(ctx context.Context, cfg config) (bool, error) {
	tmp, err := os.MkdirTemp("", "keyline-soak-")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(tmp)
	checkOwnFDs(cfg.slowLogins + cfg.slowBodies + cfg.fetches + 256)
	bin := cfg.keyline
	if bin == "" {
		if bin, err = buildKeyline(ctx, tmp); err != nil {
			return false, err
		}
	}
	srv, err := startServer(ctx, bin, tmp, adminKey, cfg.nofile)
	if err != nil {
		return false, err
	}
	defer srv.kill()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-srv.exited:
			cancel()
		case <-ctx.Done():
		}
	}()

	admin := client.New(srv.url, adminKey)
	es, err := admin.ProvisionEventStreams(ctx, "soak")
	if err != nil {
		return false, err
	}
	token, err := admin.Token(ctx)
	if err != nil {
		return false, err
	}
	const fillParts = 3
	if err := prepareTopics(ctx, es, fillParts, cfg.fillMB); err != nil {
		return false, err
	}
	fmt.Printf("soak: GOMAXPROCS=%d, server pid %d at %s, Kafka %s, RLIMIT_NOFILE %s; baseline %s, hostile %s\n",
		runtime.GOMAXPROCS(0), srv.cmd.Process.Pid, srv.url, es.Brokers[0], limitOf(cfg.nofile), cfg.baseline, cfg.duration)

	sm := &sampler{abortRSS: cfg.rssAbort}
	go sm.run(ctx, srv, cancel)
	sm.reset() // setup's peak is no phase's
	wb := &wellBehaved{es: es, url: srv.url, adminKey: adminKey, producers: cfg.producers, consumers: cfg.consumers,
		http: cfg.http, interval: cfg.interval}

	base := &phase{name: "baseline"}
	wb.run(ctx, base, cfg.baseline)
	base.peakRSS, base.peakFDs = sm.reset()

	hes := es
	if cfg.ownKey {
		if hes, err = ownCredentials(ctx, admin, es, "soak-hostile"); err != nil {
			return false, err
		}
	}
	h := &hostile{kafka: es.Brokers[0], http: strings.TrimPrefix(srv.url, "http://"), es: hes, token: token,
		slowLogins: cfg.slowLogins, slowBodies: cfg.slowBodies, fetches: cfg.fetches, fillParts: fillParts}
	hctx, stopHostile := context.WithCancel(ctx)
	hostileDone := make(chan struct{})
	var hostileErr error
	go func() {
		defer close(hostileDone)
		if cfg.hostileNice < 0 {
			h.run(hctx)
			return
		}
		hostileErr = hostileProcess(hctx, h, cfg.hostileNice)
	}()
	sleep(ctx, 2*time.Second) // the attack is under way before the clients arrive
	attacked := &phase{name: "hostile"}
	wb.run(ctx, attacked, cfg.duration)
	stopHostile()
	<-hostileDone
	if hostileErr != nil {
		return false, hostileErr
	}
	attacked.peakRSS, attacked.peakFDs = sm.reset()

	return report(cfg, sm, srv, h, base, attacked), nil
}

// prepareTopics creates the well-behaved clients' topic and fills the one
// the oversized fetches read with fillMB of random 64 KiB records.
func prepareTopics(ctx context.Context, es *client.EventStreams, fillParts int32, fillMB int) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(es.Brokers...), kgo.SASL(plain.Auth{User: es.User, Pass: es.APIKey}.AsMechanism()),
		kgo.DefaultProduceTopic(fillTopic), kgo.ProducerBatchMaxBytes(1<<20), kgo.ProducerBatchCompression(kgo.NoCompression()))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	for topic, parts := range map[string]int32{wellTopic: 2, fillTopic: fillParts} {
		resp, err := adm.CreateTopics(ctx, parts, 1, nil, topic)
		if err == nil {
			err = resp.Error()
		}
		if err != nil {
			return fmt.Errorf("create topic %s: %w", topic, err)
		}
	}
	start := time.Now()
	value := make([]byte, 64<<10)
	rand.Read(value)
	for range fillMB << 20 / len(value) {
		cl.Produce(ctx, &kgo.Record{Value: value}, nil)
	}
	if err := cl.Flush(ctx); err != nil {
		return fmt.Errorf("fill %s: %w", fillTopic, err)
	}
	fmt.Printf("soak: filled %s with %d MB in %v\n", fillTopic, fillMB, time.Since(start).Round(time.Millisecond))
	return nil
}

// ownCredentials is a Reader resource key of its own on the deployment:
// a service ID of its own, whose logins Kafka's client quotas (per user)
// count apart from every other's.
func ownCredentials(ctx context.Context, admin *client.Client, es *client.EventStreams, name string) (*client.EventStreams, error) {
	var rk struct {
		Credentials struct {
			APIKey string `json:"api_key"`
		} `json:"credentials"`
	}
	err := admin.Do(ctx, client.Request{Method: "POST", Path: "/v2/resource_keys",
		Body: map[string]any{"name": name, "source": es.GUID, "role": "Reader"}}, &rk)
	if err != nil {
		return nil, fmt.Errorf("POST /v2/resource_keys: %w", err)
	}
	if rk.Credentials.APIKey == "" {
		return nil, fmt.Errorf("the resource key %s holds no API key", name)
	}
	own := *es
	own.APIKey = rk.Credentials.APIKey
	return &own, nil
}

// checkOwnFDs warns when soak itself may run out of descriptors before the
// server does.
func checkOwnFDs(need int) {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur < uint64(need) {
		fmt.Fprintf(os.Stderr, "soak: warning: RLIMIT_NOFILE is %d but the clients need about %d; raise it (ulimit -n) or lower the hostile counts\n", lim.Cur, need)
	}
}

// report prints both phases and the verdict, and says whether it passed.
func report(cfg config, sm *sampler, srv *server, h *hostile, phases ...*phase) bool {
	fmt.Printf("%-9s %9s %9s %6s %5s | %9s %9s %16s %5s | %9s %9s %6s %5s | %9s %6s\n",
		"phase", "prod p50", "prod p99", "acked", "errs", "cons p50", "cons p99", "consumed/acked", "errs", "wrap p50", "wrap p99", "calls", "errs", "peak RSS", "fds")
	var failures []string
	for _, p := range phases {
		consumed := make([]string, len(p.consumed))
		for i := range p.consumed {
			consumed[i] = fmt.Sprint(p.consumed[i].Load())
		}
		_, pe, pFirst := p.produce.count()
		_, ce, cFirst := p.consume.count()
		wn, we, wFirst := p.wrap.count()
		fmt.Printf("%-9s %9s %9s %6d %5d | %9s %9s %16s %5d | %9s %9s %6d %5d | %9s %6d\n", p.name,
			ms(p.produce.pct(.5)), ms(p.produce.pct(.99)), p.acked.Load(), pe,
			ms(p.consume.pct(.5)), ms(p.consume.pct(.99)), strings.Join(consumed, ",")+"/"+fmt.Sprint(p.acked.Load()), ce,
			ms(p.wrap.pct(.5)), ms(p.wrap.pct(.99)), wn, we, mib(p.peakRSS), p.peakFDs)
		for kind, first := range map[string]string{"produce": pFirst, "consume": cFirst, "wrap": wFirst} {
			if first != "" {
				fmt.Printf("  %s %s: first error: %s\n", p.name, kind, first)
			}
		}
		if pe+ce+we > 0 {
			failures = append(failures, fmt.Sprintf("%d errors in the %s phase", pe+ce+we, p.name))
		}
		if p.acked.Load() == 0 {
			failures = append(failures, fmt.Sprintf("nothing was acknowledged in the %s phase", p.name))
		} else if !p.caughtUp() {
			failures = append(failures, fmt.Sprintf("consumers missed records in the %s phase", p.name))
		}
	}
	where := "in soak's process"
	if cfg.hostileNice >= 0 {
		where = fmt.Sprintf("in a child process at nice %d", cfg.hostileNice)
	}
	fmt.Printf("hostile clients, %s (server RLIMIT_NOFILE %s; peak open counts their side):\n  %v\n  %v\n  %v\n", where, limitOf(cfg.nofile), &h.logins, &h.bodies, &h.fetch)
	// The churn the server pays for: each cut is a connection it accepted
	// and closed (after holding it, when it holds refused connections).
	perSec := func(a *attack) float64 { return float64(a.cut.Load()) / cfg.duration.Seconds() }
	fmt.Printf("  connections cut by the server: %.0f a second (slow logins %.0f, slow bodies %.0f)\n",
		perSec(&h.logins)+perSec(&h.bodies)+perSec(&h.fetch), perSec(&h.logins), perSec(&h.bodies))

	base, attacked := phases[0], phases[1]
	var ratios []string
	for _, k := range []struct {
		name string
		b, a *latencies
	}{{"produce", &base.produce, &attacked.produce}, {"consume", &base.consume, &attacked.consume}, {"wrap", &base.wrap, &attacked.wrap}} {
		b, a := k.b.pct(.99), k.a.pct(.99)
		if b == 0 || a == 0 {
			ratios = append(ratios, k.name+" n/a")
			failures = append(failures, k.name+" has no p99 to compare")
			continue
		}
		r := float64(a) / float64(b)
		ratios = append(ratios, fmt.Sprintf("%s %.2fx", k.name, r))
		if r > 2 {
			failures = append(failures, fmt.Sprintf("%s p99 %s is %.1fx its baseline %s", k.name, ms(a), r, ms(b)))
		}
	}
	fmt.Printf("p99 under attack / baseline: %s\n", strings.Join(ratios, ", "))
	// Where the tail is: the calls under attack slower than twice their
	// baseline's p99, by second of the phase.
	for _, k := range []struct {
		name string
		b, a *latencies
	}{{"produce", &base.produce, &attacked.produce}, {"consume", &base.consume, &attacked.consume}, {"wrap", &base.wrap, &attacked.wrap}} {
		bySecond := func(l *latencies, start time.Time) string {
			slow := l.slowBySecond(start, 2*k.b.pct(.99))
			var parts []string
			for _, s := range slices.Sorted(maps.Keys(slow)) {
				parts = append(parts, fmt.Sprintf("%ds:%d", s, slow[s]))
			}
			return strings.Join(parts, " ")
		}
		fmt.Printf("  %s calls over 2x the baseline p99, by second: hostile %s; baseline %s\n", k.name, bySecond(k.a, attacked.start), bySecond(k.b, base.start))
	}

	sm.mu.Lock()
	peak, hwm, aborted := max(base.peakRSS, attacked.peakRSS), sm.hwm, sm.aborted
	sm.mu.Unlock()
	peak = max(peak, hwm)
	fmt.Printf("server peak RSS %s (VmHWM %s; budget %s), peak open fds %d\n", mib(peak), mib(hwm), mib(cfg.rssBudget), max(base.peakFDs, attacked.peakFDs))
	if peak > cfg.rssBudget {
		failures = append(failures, fmt.Sprintf("peak RSS %s over the budget %s", mib(peak), mib(cfg.rssBudget)))
	}
	if aborted != "" {
		failures = append(failures, aborted)
	} else if !srv.alive() {
		failures = append(failures, fmt.Sprintf("the server exited: %v", srv.err))
		fmt.Printf("server log tail:\n%s\n", srv.tail())
	}
	if len(failures) == 0 {
		fmt.Println("VERDICT: PASS")
		return true
	}
	fmt.Printf("VERDICT: FAIL: %s\n", strings.Join(failures, "; "))
	return false
}

func ms(d time.Duration) string {
	if d == 0 {
		return "-"
	}
	return fmt.Sprintf("%.1fms", float64(d)/1e6)
}

func limitOf(nofile uint64) string {
	if nofile == 0 {
		return "inherited"
	}
	return fmt.Sprint(nofile)
}
