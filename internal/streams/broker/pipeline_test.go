package broker

import (
	"errors"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// pipelinedProduce sends a produce request and, right behind it, a
// metadata request on one connection.
func pipelinedProduce(t *testing.T, rc *rawConn) {
	t.Helper()
	req := kmsg.NewPtrProduceRequest()
	req.Version, req.Acks, req.TimeoutMillis = 9, -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic = "orders"
	rt.Partitions = []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: testBatch(-1, -1, -1, "a", "b")}}
	req.Topics = append(req.Topics, rt)
	rc.send(req, 10)
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 7
	rc.send(md, 11)
}

// TestProduceIsAnsweredOnlyOnceDurableAndInOrder: while a produce
// request's data is not on disk the connection goes on reading (the batch
// is stored and has its offsets), but no answer is written, not even the
// answer to a request behind it; once durable, both answers come in order.
func TestProduceIsAnsweredOnlyOnceDurableAndInOrder(t *testing.T) {
	release := make(chan struct{})
	store := newMemStore()
	store.durable = func() error { <-release; return nil }
	tb := startBroker(t, store)
	tb.mustCreate(t, "orders", 1)
	rc := dialRaw(t, tb)
	rc.login(writerKey)
	pipelinedProduce(t, rc)
	waitFor(t, "the batch to be stored", func() bool { return endOffset(t, tb, "orders") == 2 })
	rc.nc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := rc.rd.Peek(1); err == nil {
		t.Fatal("an answer was written before the produced batch was durable")
	}
	rc.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	close(release)
	for _, want := range []int32{10, 11} {
		frame, err := readFrame(rc.rd, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		if corr := int32(frame[0])<<24 | int32(frame[1])<<16 | int32(frame[2])<<8 | int32(frame[3]); corr != want {
			t.Fatalf("answer to request %d came when %d was due", corr, want)
		}
	}
}

// TestProduceNotDurableIsNeverAcknowledged: when the data does not reach
// the disk, the connection closes without the produce answer.
func TestProduceNotDurableIsNeverAcknowledged(t *testing.T) {
	store := newMemStore()
	store.durable = func() error { return errors.New("fsync failed") }
	tb := startBroker(t, store)
	tb.mustCreate(t, "orders", 1)
	rc := dialRaw(t, tb)
	rc.login(writerKey)
	pipelinedProduce(t, rc)
	if !rc.closed() {
		t.Fatal("a produce whose data is not durable was answered")
	}
}
