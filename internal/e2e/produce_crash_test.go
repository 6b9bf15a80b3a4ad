package e2e

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/client"
)

// TestKillDuringIdempotentProduceKeepsEveryAck kills `keyline serve` with
// SIGKILL while franz-go produces with acks=all and idempotence, restarts it
// on the same data directory, and reads every partition back: each
// acknowledged record is there exactly once, and every partition holds its
// records in the order they were produced, without duplicates.
func TestKillDuringIdempotentProduceKeepsEveryAck(t *testing.T) {
	dir := t.TempDir()
	p := serveProcess(t, dir)
	admin := &api{t: t, c: client.New(p.url, adminKey)}
	dep := admin.provisionDeployment(admin.keyProtect("crash-kp"), "crash")
	const partitions = 3
	createTopic(t, dep.manager, "ledger", partitions)

	prod := franz(t, dep.writer, kgo.DefaultProduceTopic("ledger"), kgo.RecordPartitioner(kgo.ManualPartitioner()),
		kgo.RequiredAcks(kgo.AllISRAcks()), kgo.RecordRetries(3), kgo.RecordDeliveryTimeout(5*time.Second))
	var mu sync.Mutex
	acked := map[string]bool{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			part := int32(i % partitions)
			v := fmt.Sprintf("p%d-%08d", part, i/partitions)
			prod.Produce(ctx, &kgo.Record{Partition: part, Value: []byte(v)}, func(_ *kgo.Record, err error) {
				if err == nil {
					mu.Lock()
					acked[v] = true
					mu.Unlock()
				}
			})
		}
	})
	waitFor(t, 60*time.Second, "records to be acknowledged before the kill", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 20000
	})
	p.kill()
	cancel()
	wg.Wait()
	prod.Close() // fails what is still buffered
	mu.Lock()
	ackedAtKill := len(acked)
	mu.Unlock()

	p2 := serveProcess(t, dir)
	admin = &api{t: t, c: client.New(p2.url, adminKey)}
	info := admin.deploymentInfo(dep.guid)
	if info["state"] != "active" {
		t.Fatalf("after the restart the deployment is %v: %v", info["state"], info["state_reason"])
	}
	reader := dep.reader
	reader.Brokers = nil
	for _, b := range info["kafka_brokers_sasl"].([]any) {
		reader.Brokers = append(reader.Brokers, b.(string))
	}
	end := map[int32]int64{}
	offs, err := kadm.NewClient(franz(t, reader)).ListEndOffsets(testCtx(t), "ledger")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	offs.Each(func(o kadm.ListedOffset) { end[o.Partition] = o.Offset; total += int(o.Offset) })
	cons := franz(t, reader, kgo.ConsumeTopics("ledger"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := consumeRecords(t, cons, total)
	stored := map[string]bool{}
	last := map[int32]string{}
	for _, r := range got {
		v := string(r.Value)
		if stored[v] {
			t.Fatalf("%s is stored twice", v)
		}
		stored[v] = true
		if !strings.HasPrefix(v, fmt.Sprintf("p%d-", r.Partition)) {
			t.Fatalf("%s is in partition %d", v, r.Partition)
		}
		if prev, ok := last[r.Partition]; ok && v <= prev {
			t.Fatalf("partition %d: %s after %s: out of produce order", r.Partition, v, prev)
		}
		last[r.Partition] = v
	}
	lost := 0
	for v := range acked {
		if !stored[v] {
			lost++
			if lost < 5 {
				t.Errorf("acknowledged record %s is missing after the restart", v)
			}
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged records are missing", lost, len(acked))
	}
	t.Logf("%d records acknowledged before the kill, %d stored after the restart (end offsets %v)", ackedAtKill, len(stored), end)
}
