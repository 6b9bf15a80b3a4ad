package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

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
	checkLedger(t, withBrokers(dep.reader, info), "ledger", acked)
	t.Logf("%d records acknowledged before the kill", ackedAtKill)
}
