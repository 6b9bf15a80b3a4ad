package main

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// transactions compares transactional produce with idempotent produce on
// the sealed, syncing log: records/s of each, for transactions of 100 and
// 1,000 records of 100 B and 1 KiB over 3 partitions. A transaction costs
// AddPartitionsToTxn, EndTxn and one marker per partition on top of its
// records.
func (b *bench) transactions() {
	for _, size := range []int{100, 1024} {
		for _, perTxn := range []int{100, 1000} {
			idem := b.txnRun(size, perTxn, false)
			txn := b.txnRun(size, perTxn, true)
			fmt.Printf("== transactional produce, %d B records, %d per transaction, 3 partitions: %.0f records/s (%.1f MB/s, %.0f commits/s); idempotent: %.0f records/s (%.2fx) ==\n",
				size, perTxn, txn.rate, txn.rate*float64(size)/1e6, txn.rate/float64(perTxn), idem.rate, txn.rate/idem.rate)
		}
	}
}

type txnResult struct{ rate float64 }

// txnRun produces for b.produceFor in rounds of perTxn records, each round
// a transaction (committed) or, for the comparison, a flush of an
// idempotent producer.
func (b *bench) txnRun(size, perTxn int, transactional bool) txnResult {
	t := b.keyline(false)
	defer t.close()
	const topic = "txn-bench"
	t.createTopic(topic, 3)
	opts := []kgo.Opt{kgo.DefaultProduceTopic(topic)}
	if transactional {
		opts = append(opts, kgo.TransactionalID("bench-txn"))
	}
	cl := t.client(opts...)
	defer cl.Close()
	ctx := context.Background()
	vals := values(size)
	n := 0
	start := time.Now()
	for time.Since(start) < b.produceFor {
		if transactional {
			if err := cl.BeginTransaction(); err != nil {
				fatal(err)
			}
		}
		for i := range perTxn {
			cl.Produce(ctx, &kgo.Record{Value: vals[(n+i)%len(vals)]}, func(_ *kgo.Record, err error) {
				if err != nil {
					fatalf("produce: %v", err)
				}
			})
		}
		// franz-go commits only what has been flushed.
		if err := cl.Flush(ctx); err != nil {
			fatal(err)
		}
		if transactional {
			if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
				fatal(err)
			}
		}
		n += perTxn
	}
	return txnResult{rate: float64(n) / time.Since(start).Seconds()}
}
