// Command franz-cluster produces to an Event Streams deployment through one
// Keyline node and reads the records back through another, with franz-go:
// the walkthrough of docs/cluster.md. It produces numbered records (acks=all,
// idempotent) for -seconds, printing each second how many were acknowledged
// (kill -9 the deployment's leader meanwhile: the count stops, then goes on
// through the new leader), then reads the topic from the start in a consumer
// group and says whether every acknowledged record came back exactly once.
//
//	go run ./examples/franz-cluster -produce-to 127.0.0.1:9100 -consume-from 127.0.0.1:9300 -apikey "$key" -topic orders
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

func main() {
	produceTo := flag.String("produce-to", "", "bootstrap servers of the producer, comma-separated (one node is enough)")
	consumeFrom := flag.String("consume-from", "", "bootstrap servers of the consumer, comma-separated")
	apikey := flag.String("apikey", os.Getenv("KAFKA_APIKEY"), "the credentials' api_key (default $KAFKA_APIKEY)")
	topic := flag.String("topic", "orders", "the topic, which must exist")
	seconds := flag.Int("seconds", 10, "how long to produce")
	flag.Parse()
	if *produceTo == "" || *consumeFrom == "" || *apikey == "" {
		log.Fatal("-produce-to, -consume-from and -apikey are required")
	}
	login := kgo.SASL(plain.Auth{User: "token", Pass: *apikey}.AsMechanism())
	id := make([]byte, 4)
	rand.Read(id)
	run := "run-" + hex.EncodeToString(id) + "-"

	prod, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*produceTo, ",")...), login, kgo.DefaultProduceTopic(*topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordDeliveryTimeout(time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	var mu sync.Mutex
	acked := map[string]bool{}
	var failed int
	var lastErr error
	ctx := context.Background()
	end := time.Now().Add(time.Duration(*seconds) * time.Second)
	tick := time.NewTicker(time.Second)
	before := 0
	for i := 0; time.Now().Before(end); i++ {
		v := fmt.Sprintf("%s%08d", run, i)
		prod.Produce(ctx, &kgo.Record{Value: []byte(v)}, func(_ *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed, lastErr = failed+1, err
				return
			}
			acked[v] = true
		})
		select {
		case <-tick.C:
			mu.Lock()
			fmt.Printf("%s acknowledged %d (+%d)\n", time.Now().Format("15:04:05"), len(acked), len(acked)-before)
			before = len(acked)
			mu.Unlock()
		default:
		}
	}
	tick.Stop()
	if err := prod.Flush(ctx); err != nil {
		log.Fatal(err)
	}
	prod.Close()
	fmt.Printf("produced through %s: %d acknowledged, %d failed (%v)\n", *produceTo, len(acked), failed, lastErr)

	cons, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*consumeFrom, ",")...), login, kgo.ConsumeTopics(*topic),
		kgo.ConsumerGroup("franz-cluster-"+hex.EncodeToString(id)), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		log.Fatal(err)
	}
	defer cons.Close()
	rctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	seen := map[string]int{}
	found := 0
	for found < len(acked) && rctx.Err() == nil {
		fs := cons.PollFetches(rctx)
		fs.EachError(func(t string, p int32, err error) {
			if rctx.Err() == nil {
				log.Printf("fetch %s/%d: %v", t, p, err)
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			v := string(r.Value)
			if !strings.HasPrefix(v, run) {
				return // another run's, or kcat's
			}
			seen[v]++
			if acked[v] && seen[v] == 1 {
				found++
			}
		})
	}
	twice := 0
	for _, n := range seen {
		if n > 1 {
			twice++
		}
	}
	fmt.Printf("read back through %s: %d of the %d acknowledged records, %d read more than once\n", *consumeFrom, found, len(acked), twice)
	if found < len(acked) || twice > 0 {
		os.Exit(1)
	}
}
