package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

// longCtx bounds a test that moves a lot of data on a loaded machine.
func longCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// fill produces about total bytes to topic's partitions in records of
// recordBytes, random so that nothing compresses them.
func fill(t testing.TB, tb testBroker, topic string, partitions int32, total, recordBytes int) {
	t.Helper()
	tb.mustCreate(t, topic, partitions)
	w := tb.client(t, writerKey, kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.RecordPartitioner(kgo.RoundRobinPartitioner()))
	var rs []*kgo.Record
	for range total / recordBytes {
		v := make([]byte, recordBytes)
		rand.Read(v)
		rs = append(rs, &kgo.Record{Value: v})
	}
	if err := w.ProduceSync(longCtx(t), rs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
}

// rawFetch asks for everything from the offsets given, as the report
// that found the unbounded memory did: MaxBytes and PartitionMaxBytes
// 2^31-1.
func rawFetch(ctx context.Context, tb testBroker, cl *kgo.Client, topic string, offsets []int64, maxWait int32) (*kmsg.FetchResponse, error) {
	req := kmsg.NewPtrFetchRequest()
	req.MaxWaitMillis, req.MinBytes, req.MaxBytes = maxWait, 1, math.MaxInt32
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic, ft.TopicID = topic, tb.topics.byNameOrNil(topic).id
	for p, off := range offsets {
		ft.Partitions = append(ft.Partitions, kmsg.FetchRequestTopicPartition{Partition: int32(p), FetchOffset: off,
			PartitionMaxBytes: math.MaxInt32, CurrentLeaderEpoch: -1, LogStartOffset: -1})
	}
	req.Topics = append(req.Topics, ft)
	return req.RequestWith(ctx, cl)
}

// nextOffset is the offset after the last of batches.
func nextOffset(batches []byte, from int64) int64 {
	for len(batches) >= batchHeaderLen {
		base := int64(binary.BigEndian.Uint64(batches))
		length := int32(binary.BigEndian.Uint32(batches[8:]))
		lastDelta := int32(binary.BigEndian.Uint32(batches[23:]))
		from = base + int64(lastDelta) + 1
		batches = batches[batchLengthOverhead+int(length):]
	}
	return from
}

func partitionEnd(tb testBroker, topic string, partition int) int64 {
	return tb.topics.partitions(tb.topics.byNameOrNil(topic))[partition].log.EndOffset()
}

func plainAuth(key string) sasl.Mechanism { return plain.Auth{User: "token", Pass: key}.AsMechanism() }

// readAll fetches topic to its end with its own connection, fetch after
// fetch, and fails when a fetch gives an error or the context ends first.
func readAll(ctx context.Context, tb testBroker, topic string, partitions int, maxWait int32) error {
	cl, err := kgo.NewClient(kgo.SeedBrokers(tb.Addr().String()), kgo.SASL(plainAuth(readerKey)))
	if err != nil {
		return err
	}
	defer cl.Close()
	offsets := make([]int64, partitions)
	for {
		done := true
		for p, off := range offsets {
			done = done && off >= partitionEnd(tb, topic, p)
		}
		if done {
			return nil
		}
		resp, err := rawFetch(ctx, tb, cl, topic, offsets, maxWait)
		if err != nil {
			return fmt.Errorf("at offsets %v: %w", offsets, err)
		}
		for _, p := range resp.Topics[0].Partitions {
			if p.ErrorCode != 0 {
				return fmt.Errorf("partition %d at offset %d: error %d", p.Partition, offsets[p.Partition], p.ErrorCode)
			}
			offsets[p.Partition] = nextOffset(p.RecordBatches, offsets[p.Partition])
		}
	}
}

// memoryReturned waits until nothing holds any of b's bytes any more: the
// gauge is back at zero and the whole budget can be taken at once.
func memoryReturned(t *testing.T, what string, b budgets) {
	t.Helper()
	waitFor(t, what+" memory given back", func() bool {
		if b[0].Use().InUse != 0 || !b.tryAcquire(b.size()) {
			return false
		}
		b.release(b.size())
		for _, m := range b {
			if !m.lane.TryAcquire(max(m.size/laneShare, 1)) {
				return false
			}
			m.lane.Release(max(m.size/laneShare, 1))
		}
		return true
	})
}

// Fifty fetchers asking for everything at once hold no more than the fetch
// budget, the deployment's or the process's, and every one of them still
// reads the topic to its end.
func TestConcurrentFetchesStayWithinTheFetchMemory(t *testing.T) {
	const (
		budget   = 4 << 20
		fetchers = 50
		topic    = 20 << 20
	)
	for _, tc := range []struct {
		name    string
		brokers int
		shared  bool
	}{
		{"deployment", 1, false},
		{"process", 2, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			process := NewMemoryBudget(budget)
			var tbs []testBroker
			for range tc.brokers {
				tbs = append(tbs, startBroker(t, nil, func(c *Config) {
					// All 50 fetchers log in at once from one address.
					c.MaxPreAuthPerIP = fetchers
					if tc.shared {
						c.FetchMemory, c.SharedFetchMemory = 64<<20, process
					} else {
						c.FetchMemory = budget
					}
				}))
			}
			for _, tb := range tbs {
				fill(t, tb, "wide", 2, topic/tc.brokers, 128<<10)
			}
			ctx := longCtx(t)
			errs := make(chan error, fetchers)
			var wg sync.WaitGroup
			for i := range fetchers {
				wg.Go(func() { errs <- readAll(ctx, tbs[i%len(tbs)], "wide", 2, 2000) })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			peak := tbs[0].FetchMemory().Peak
			if tc.shared {
				for _, tb := range tbs {
					memoryReturned(t, "fetch", tb.fetchMem)
				}
				peak = process.Use().Peak
			} else {
				memoryReturned(t, "fetch", tbs[0].fetchMem)
			}
			t.Logf("fetch memory peak: %d KiB of %d KiB", peak>>10, budget>>10)
			if peak > budget {
				t.Fatalf("fetches held %d bytes at once, over the budget of %d", peak, budget)
			}
			if peak < budget/4 {
				t.Fatalf("fetches held at most %d bytes at once: the gauge does not see them", peak)
			}
		})
	}
}

// A consumer alone on the broker reads a batch larger than the whole fetch
// budget, and what follows it.
func TestLoneConsumerReadsABatchLargerThanTheFetchMemory(t *testing.T) {
	tb := startBroker(t, nil, func(c *Config) { c.FetchMemory = 1 << 20 })
	if _, err := tb.CreateTopic(t.Context(), "huge", 1, map[string]string{"max.message.bytes": "8388608"}); err != nil {
		t.Fatal(err)
	}
	w := tb.client(t, writerKey, kgo.DefaultProduceTopic("huge"), kgo.ProducerBatchMaxBytes(8<<20),
		kgo.ProducerBatchCompression(kgo.NoCompression()))
	big := make([]byte, 3<<20)
	rand.Read(big)
	if err := w.ProduceSync(testCtx(t), &kgo.Record{Value: big}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := w.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("after")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := readAll(longCtx(t), tb, "huge", 1, 500); err != nil {
		t.Fatal(err)
	}
	memoryReturned(t, "fetch", tb.fetchMem)
}

// A fetch that finds the budget spent waits no longer than its
// MaxWaitMillis and is answered without data; once memory is free it gets
// the data. A fetch still waiting when its connection closes gives up its
// place.
func TestFetchWaitingForMemoryEndsByMaxWaitOrClose(t *testing.T) {
	tb := startBroker(t, nil, func(c *Config) { c.FetchMemory = 1 << 20 })
	fill(t, tb, "t", 1, 256<<10, 64<<10)
	cl := tb.client(t, readerKey)
	if !tb.fetchMem.tryAcquire(tb.fetchMem.size()) {
		t.Fatal("the fetch budget is not free at the start")
	}
	start := time.Now()
	resp, err := rawFetch(testCtx(t), tb, cl, "t", []int64{0}, 300)
	if err != nil {
		t.Fatal(err)
	}
	p := resp.Topics[0].Partitions[0]
	if p.ErrorCode != 0 || len(p.RecordBatches) != 0 || p.HighWatermark != 4 {
		t.Fatalf("with the budget spent: error %d, %d bytes, high watermark %d; want no error, no data, 4", p.ErrorCode, len(p.RecordBatches), p.HighWatermark)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("answered after %v, before its MaxWaitMillis", waited)
	}

	// A fetch that would wait a minute, on a connection that closes.
	waiting := tb.client(t, readerKey)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); rawFetch(ctx, tb, waiting, "t", []int64{0}, 60_000) }()
	time.Sleep(200 * time.Millisecond) // let it queue; the test holds either way
	cancel()
	waiting.Close()
	<-done
	tb.fetchMem.release(tb.fetchMem.size())
	memoryReturned(t, "fetch", tb.fetchMem)

	resp, err = rawFetch(testCtx(t), tb, cl, "t", []int64{0}, 300)
	if err != nil {
		t.Fatal(err)
	}
	if got := nextOffset(resp.Topics[0].Partitions[0].RecordBatches, 0); got != 4 {
		t.Fatalf("with the budget free the fetch reached offset %d, want 4", got)
	}
}

// A consumer reading a small batch at the tail of a topic is not queued
// behind fetches asking for everything: with the budget spent and a large
// fetch waiting for it, its fetch is answered with its batch (from the
// budget's lane), and the lane is given back.
func TestSmallFetchIsNotQueuedBehindLargeOnes(t *testing.T) {
	tb := startBroker(t, nil, func(c *Config) { c.FetchMemory = 1 << 20 })
	fill(t, tb, "big", 1, 512<<10, 64<<10)
	fill(t, tb, "small", 1, 2<<10, 1<<10)
	if !tb.fetchMem.tryAcquire(tb.fetchMem.size()) {
		t.Fatal("the fetch budget is not free at the start")
	}
	big := tb.client(t, readerKey)
	ctx, cancel := context.WithCancel(context.Background())
	bigDone := make(chan struct{})
	go func() { defer close(bigDone); rawFetch(ctx, tb, big, "big", []int64{0}, 120_000) }()
	time.Sleep(200 * time.Millisecond) // let it queue; the test holds either way

	resp, err := rawFetch(testCtx(t), tb, tb.client(t, readerKey), "small", []int64{0}, 30_000)
	if err != nil {
		t.Fatal(err)
	}
	if got := nextOffset(resp.Topics[0].Partitions[0].RecordBatches, 0); got != 2 {
		t.Fatalf("behind a spent budget and a large fetch the small fetch reached offset %d, want 2", got)
	}
	cancel()
	big.Close()
	<-bigDone
	tb.fetchMem.release(tb.fetchMem.size())
	memoryReturned(t, "fetch", tb.fetchMem)
}

// Produce requests whose frames are being read hold no more than the
// request budget: connections that announce large frames and stall wait
// for memory before their bodies are read, and all are stored once they
// finish.
func TestConcurrentProduceRequestsStayWithinTheRequestMemory(t *testing.T) {
	const (
		budget  = 4 << 20
		senders = 10
		value   = 900 << 10
	)
	tb := startBroker(t, nil, func(c *Config) { c.RequestMemory, c.MaxRequestBytes = budget, 2<<20 })
	tb.mustCreate(t, "in", 1)
	finish := make(chan struct{})
	var wg sync.WaitGroup
	for i := range senders {
		rc := dialRaw(t, tb)
		rc.nc.SetDeadline(time.Now().Add(time.Minute))
		rc.login(writerKey)
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = 9, -1, 30000
		rt := kmsg.NewProduceRequestTopic()
		rt.Topic = "in"
		rt.Partitions = []kmsg.ProduceRequestTopicPartition{{Records: testBatch(-1, -1, -1, strings.Repeat("x", value))}}
		req.Topics = append(req.Topics, rt)
		frame := rc.f.AppendRequest(nil, req, int32(10+i))
		wg.Go(func() {
			// All but the last byte, then a stall: the server holds what
			// the frame announced, or waits for memory before reading it.
			if _, err := rc.nc.Write(frame[:len(frame)-1]); err != nil {
				t.Error(err)
				return
			}
			<-finish
			if _, err := rc.nc.Write(frame[len(frame)-1:]); err != nil {
				t.Error(err)
				return
			}
			resp := req.ResponseKind().(*kmsg.ProduceResponse)
			if err := rc.recv(resp, true); err != nil || resp.Topics[0].Partitions[0].ErrorCode != 0 {
				t.Errorf("produce: %v %+v", err, resp)
			}
		})
	}
	// As many frames as fit are being read; the others wait.
	waitFor(t, "the budget to fill with stalled frames", func() bool { return tb.RequestMemory().InUse > budget-(1<<20) })
	close(finish)
	wg.Wait()
	if got := partitionEnd(tb, "in", 0); got != senders {
		t.Fatalf("%d records stored, want %d", got, senders)
	}
	memoryReturned(t, "request", tb.requestMem)
	peak := tb.RequestMemory().Peak
	t.Logf("request memory peak: %d KiB of %d KiB with %d stalled frames of about %d KiB", peak>>10, budget>>10, senders, value>>10)
	if peak > budget {
		t.Fatalf("produce requests held %d bytes at once, over the budget of %d", peak, budget)
	}
}

// A request frame larger than all the memory requests may hold closes the
// connection with a reason in the log; the broker's largest request must
// fit its own budget.
func TestRequestLargerThanTheRequestMemoryIsRefused(t *testing.T) {
	var logs syncBuffer
	process := NewMemoryBudget(1 << 20)
	tb := startBroker(t, nil, func(c *Config) {
		c.SharedRequestMemory = process
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	tb.mustCreate(t, "in", 1)
	rp := newRawProducer(t, tb, "in")
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = "in", rp.id
	rt.Partitions = []kmsg.ProduceRequestTopicPartition{{Records: testBatch(-1, -1, -1, strings.Repeat("x", 2<<20))}}
	req.Topics = append(req.Topics, rt)
	if _, err := req.RequestWith(testCtx(t), rp.cl); err == nil {
		t.Fatal("a produce request larger than the request memory was answered")
	}
	if want := "over the 1048576 bytes that requests may hold at once"; !strings.Contains(logs.String(), want) {
		t.Fatalf("the log does not say %q:\n%s", want, logs.String())
	}
	if _, err := rp.produce(testBatch(-1, -1, -1, "small")); err != nil {
		t.Fatalf("a small produce after the refused one: %v", err)
	}
	memoryReturned(t, "request", tb.requestMem)

	_, err := New(Config{Addr: "127.0.0.1:0", Storage: newMemStore(), Authenticate: testAuthenticate,
		RequestMemory: 1 << 20, MaxRequestBytes: 2 << 20})
	if err == nil || !strings.Contains(err.Error(), "must fit in the request memory") {
		t.Fatalf("New with MaxRequestBytes over RequestMemory: %v, want a refusal", err)
	}
}

// syncBuffer is a bytes.Buffer that a logger may write from any goroutine.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Clients reading everything at once, over and over, read in turns: no
// more large fetches read (and decrypt) at once than largeReads has turns,
// so they cannot keep every core, and every one of them still reads the
// topic to its end.
func TestLargeFetchesReadInTurns(t *testing.T) {
	const fetchers = 20
	tb := startBroker(t, nil, func(c *Config) { c.MaxPreAuthPerIP = fetchers })
	fill(t, tb, "wide", 2, 8<<20, 128<<10)
	largeReads.peak.Store(largeReads.busy.Load())
	ctx := longCtx(t)
	errs := make(chan error, fetchers)
	var wg sync.WaitGroup
	for range fetchers {
		wg.Go(func() { errs <- readAll(ctx, tb, "wide", 2, 2000) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if peak := largeReads.peak.Load(); peak > largeReads.n || peak == 0 {
		t.Fatalf("%d turns were taken at once; want 1 to %d", peak, largeReads.n)
	}
	if busy := largeReads.busy.Load(); busy != 0 {
		t.Fatalf("%d turns are still taken", busy)
	}

	// A consumer at the tail reads at once while the turns are taken.
	fill(t, tb, "tail", 1, 1<<10, 1<<10)
	if !largeReads.sem.TryAcquire(largeReads.n) {
		t.Fatal("the turns are not free")
	}
	defer largeReads.sem.Release(largeReads.n)
	kcl := tb.client(t, readerKey, kgo.ConsumeTopics("tail"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	fs := kcl.PollFetches(testCtx(t))
	if err := fs.Err(); err != nil || fs.NumRecords() != 1 {
		t.Fatalf("a consumer at the tail, with the turns taken: %d records, err %v; want its record", fs.NumRecords(), err)
	}
}
