package broker

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// BenchmarkTransactionalProduce compares idempotent produce with
// transactional produce committing every perTxn records; both flush every
// perTxn records, so the difference is the transaction's own requests
// (AddPartitionsToTxn, EndTxn and its markers, each synced).
func BenchmarkTransactionalProduce(b *testing.B) {
	for _, perTxn := range []int{100, 1000} {
		for _, txn := range []bool{false, true} {
			name := fmt.Sprintf("idempotent/%d", perTxn)
			if txn {
				name = fmt.Sprintf("transactional/%d", perTxn)
			}
			b.Run(name, func(b *testing.B) {
				tb := startBroker(b, nil)
				tb.mustCreate(b, "bench", 4)
				opts := []kgo.Opt{kgo.DefaultProduceTopic("bench"), kgo.ProducerLinger(5 * time.Millisecond),
					kgo.ProducerBatchCompression(kgo.NoCompression())}
				if txn {
					opts = append(opts, kgo.TransactionalID("bench"))
				}
				cl := tb.client(b, writerKey, opts...)
				value := make([]byte, 100)
				rand.Read(value)
				ctx := testCtx(b)
				round := func(n int) {
					if txn {
						if err := cl.BeginTransaction(); err != nil {
							b.Fatal(err)
						}
					}
					for range n {
						cl.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
							if err != nil {
								b.Error(err)
							}
						})
					}
					if err := cl.Flush(ctx); err != nil {
						b.Fatal(err)
					}
					if txn {
						if err := cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.SetBytes(int64(len(value)))
				b.ResetTimer()
				for left := b.N; left > 0; left -= perTxn {
					round(min(left, perTxn))
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
			})
		}
	}
}
