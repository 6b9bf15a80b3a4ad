package broker

import (
	"crypto/rand"
	"fmt"
	"runtime"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A fetch serves one batch larger than PartitionMaxBytes only for the first
// partition with data (KIP-74): later partitions' oversized batches wait for
// the next fetch. Partitions are read one after another on one core and
// concurrently on more; both must answer alike.
func TestFetchServesAnOversizedBatchOnlyForTheFirstPartitionWithData(t *testing.T) {
	for _, procs := range []int{1, 2} {
		t.Run(fmt.Sprintf("GOMAXPROCS=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			tb := startBroker(t, nil)
			tb.mustCreate(t, "big", 3)
			w := tb.client(t, writerKey, kgo.RecordPartitioner(kgo.ManualPartitioner()))
			value := make([]byte, 3000) // random, so no compression shrinks it
			rand.Read(value)
			for _, p := range []int32{1, 2} { // partition 0 stays empty
				if err := w.ProduceSync(testCtx(t), &kgo.Record{Topic: "big", Partition: p, Value: value}).FirstErr(); err != nil {
					t.Fatal(err)
				}
			}
			cl := tb.client(t, readerKey)
			fetch := func(parts ...int32) *kmsg.FetchResponse {
				t.Helper()
				req := kmsg.NewPtrFetchRequest()
				req.MaxWaitMillis, req.MinBytes, req.MaxBytes = 0, 1, 1<<20
				ft := kmsg.NewFetchRequestTopic()
				ft.Topic, ft.TopicID = "big", tb.topics.byNameOrNil("big").id
				for _, p := range parts {
					ft.Partitions = append(ft.Partitions, kmsg.FetchRequestTopicPartition{Partition: p, PartitionMaxBytes: 1000, CurrentLeaderEpoch: -1, LogStartOffset: -1})
				}
				req.Topics = append(req.Topics, ft)
				resp, err := req.RequestWith(testCtx(t), cl)
				if err != nil {
					t.Fatal(err)
				}
				return resp
			}
			got := func(resp *kmsg.FetchResponse) (sizes []int) {
				for _, p := range resp.Topics[0].Partitions {
					if p.ErrorCode != 0 {
						t.Fatalf("partition %d: error %d", p.Partition, p.ErrorCode)
					}
					sizes = append(sizes, len(p.RecordBatches))
				}
				return sizes
			}
			sizes := got(fetch(0, 1, 2))
			if sizes[0] != 0 || sizes[1] < 3000 || sizes[2] != 0 {
				t.Fatalf("batch bytes per partition = %v, want [0, >=3000, 0]: only partition 1, the first with data, may exceed its limit", sizes)
			}
			if sizes := got(fetch(2)); sizes[0] < 3000 {
				t.Fatalf("partition 2 fetched alone gave %d bytes, want its oversized batch", sizes[0])
			}
		})
	}
}
