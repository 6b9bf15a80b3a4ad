package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/keyline/keyline/internal/client"
)

// callTimeout bounds each well-behaved call: one that takes longer counts
// as an error, and as this long in the latencies, so a hang shows in p99.
const callTimeout = 10 * time.Second

// latencies are one kind of call's durations and failures in one phase.
type latencies struct {
	mu       sync.Mutex
	d        []time.Duration
	ends     []time.Time // when each call ended
	errs     int
	firstErr string
}

func (l *latencies) add(d time.Duration, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.errs++
		if l.firstErr == "" {
			l.firstErr = err.Error()
		}
		d = max(d, callTimeout)
	}
	l.d = append(l.d, d)
	l.ends = append(l.ends, time.Now())
}

// slowBySecond counts the calls slower than over by the second (from
// start) they ended in: whether a phase's tail is spread over it or comes
// in bursts.
func (l *latencies) slowBySecond(start time.Time, over time.Duration) map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := map[int]int{}
	for i, d := range l.d {
		if d > over {
			n[int(l.ends[i].Sub(start)/time.Second)]++
		}
	}
	return n
}

// pct is the q-quantile (0..1); 0 without samples.
func (l *latencies) pct(q float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	s := slices.Clone(l.d)
	slices.Sort(s)
	return s[int(float64(len(s)-1)*q)]
}

func (l *latencies) count() (n, errs int, first string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d), l.errs, l.firstErr
}

// phase is what the well-behaved clients saw in one phase.
type phase struct {
	name     string
	start    time.Time
	produce  latencies // ProduceSync, acks=all, to acknowledgement
	consume  latencies // record timestamp to PollFetches returning it
	wrap     latencies // Key Protect wrap over HTTP
	acked    atomic.Int64
	consumed []atomic.Int64 // per consumer
	peakRSS  int64
	peakFDs  int
}

// wellBehaved are ordinary producers, consumers and Key Protect callers.
type wellBehaved struct {
	es                         *client.EventStreams
	url, adminKey              string
	producers, consumers, http int
	interval                   time.Duration // between one client's calls
}

// run keeps the clients busy for d and records into p. Clients are new for
// each phase, so that connecting is measured too: a server that stops
// accepting fails its new clients first.
func (w *wellBehaved) run(ctx context.Context, p *phase, d time.Duration) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	p.start = start
	p.consumed = make([]atomic.Int64, w.consumers)
	login := kgo.SASL(plain.Auth{User: w.es.User, Pass: w.es.APIKey}.AsMechanism())
	base := []kgo.Opt{kgo.SeedBrokers(w.es.Brokers...), login, kgo.RetryTimeout(callTimeout), kgo.RequestTimeoutOverhead(callTimeout)}
	var consumers sync.WaitGroup
	consCtx, stopConsumers := context.WithCancel(ctx)
	defer stopConsumers()
	for i := range w.consumers {
		cl, err := kgo.NewClient(append(base, kgo.ConsumeTopics(wellTopic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AfterMilli(start.UnixMilli())))...)
		if err != nil {
			p.consume.add(0, err)
			continue
		}
		consumers.Go(func() {
			defer cl.Close()
			for consCtx.Err() == nil {
				fs := cl.PollFetches(consCtx)
				now := time.Now()
				fs.EachError(func(_ string, _ int32, err error) {
					if consCtx.Err() == nil {
						p.consume.add(0, err)
					}
				})
				fs.EachRecord(func(r *kgo.Record) {
					p.consume.add(now.Sub(r.Timestamp), nil)
					p.consumed[i].Add(1)
				})
			}
		})
	}
	var producers sync.WaitGroup
	prodCtx, stopProducers := context.WithTimeout(ctx, d)
	defer stopProducers()
	for range w.producers {
		cl, err := kgo.NewClient(append(base, kgo.DefaultProduceTopic(wellTopic), kgo.ProducerLinger(0),
			kgo.RecordDeliveryTimeout(callTimeout))...)
		if err != nil {
			p.produce.add(0, err)
			continue
		}
		value := make([]byte, 1024)
		rand.Read(value)
		producers.Go(func() {
			defer cl.Close()
			w.every(prodCtx, func() {
				cctx, cancel := context.WithTimeout(prodCtx, callTimeout)
				defer cancel()
				t0 := time.Now()
				err := cl.ProduceSync(cctx, &kgo.Record{Value: value}).FirstErr()
				if prodCtx.Err() != nil {
					return // cut short by the end of the phase
				}
				p.produce.add(time.Since(t0), err)
				if err == nil {
					p.acked.Add(1)
				}
			})
		})
	}
	kp := client.New(w.url, w.adminKey)
	path := client.Path("api", "v2", "keys", w.es.KeyID, "actions", "wrap")
	for range w.http {
		dek := make([]byte, 32)
		rand.Read(dek)
		body := map[string]any{"plaintext": base64.StdEncoding.EncodeToString(dek)}
		producers.Go(func() {
			w.every(prodCtx, func() {
				cctx, cancel := context.WithTimeout(prodCtx, callTimeout)
				defer cancel()
				t0 := time.Now()
				var out struct {
					Ciphertext string `json:"ciphertext"`
				}
				err := kp.Do(cctx, client.Request{Method: "POST", Path: path, Header: map[string]string{"bluemix-instance": w.es.KeyProtect}, Body: body}, &out)
				if err == nil && out.Ciphertext == "" {
					err = fmt.Errorf("wrap answered no ciphertext")
				}
				if prodCtx.Err() != nil {
					return // cut short by the end of the phase
				}
				p.wrap.add(time.Since(t0), err)
			})
		})
	}
	producers.Wait()
	// The consumers catch up with what was acknowledged, for a while.
	deadline := time.Now().Add(callTimeout)
	for time.Now().Before(deadline) && ctx.Err() == nil && !p.caughtUp() {
		time.Sleep(50 * time.Millisecond)
	}
	stopConsumers()
	consumers.Wait()
}

// caughtUp says whether every consumer has read every acknowledged record.
func (p *phase) caughtUp() bool {
	for i := range p.consumed {
		if p.consumed[i].Load() < p.acked.Load() {
			return false
		}
	}
	return true
}

// every runs f at w.interval until ctx ends; a slow f delays the next.
func (w *wellBehaved) every(ctx context.Context, f func()) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	for ctx.Err() == nil {
		f()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}
