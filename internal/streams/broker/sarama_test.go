package broker

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
)

func saramaConfig(key string) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.ClientID = "sarama-test"
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	cfg.Net.SASL.User, cfg.Net.SASL.Password = "token", key
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.MaxWaitTime = 200 * time.Millisecond
	cfg.Metadata.Retry.Backoff = 50 * time.Millisecond
	return cfg
}

func TestSaramaAdminProduceConsume(t *testing.T) {
	tb := startBroker(t, nil)
	addrs := []string{tb.Addr().String()}
	adm, err := sarama.NewClusterAdmin(addrs, saramaConfig(managerKey))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if err := adm.CreateTopic("invoices", &sarama.TopicDetail{NumPartitions: 2, ReplicationFactor: 1}, false); err != nil {
		t.Fatal(err)
	}
	topics, err := adm.ListTopics()
	if err != nil {
		t.Fatal(err)
	}
	if d, ok := topics["invoices"]; !ok || d.NumPartitions != 2 {
		t.Fatalf("ListTopics: %+v", topics)
	}

	pcfg := saramaConfig(writerKey)
	pcfg.Producer.Partitioner = sarama.NewManualPartitioner
	pcfg.Producer.Idempotent, pcfg.Net.MaxOpenRequests = true, 1
	prod, err := sarama.NewSyncProducer(addrs, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	for i := range 10 {
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "invoices", Partition: 0, Value: sarama.StringEncoder(fmt.Sprint(i))}); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := sarama.NewConsumer(addrs, saramaConfig(readerKey))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	pc, err := cons.ConsumePartition("invoices", 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ctx := testCtx(t)
	for i := range 10 {
		select {
		case m := <-pc.Messages():
			if string(m.Value) != fmt.Sprint(i) || m.Offset != int64(i) {
				t.Fatalf("message %d: offset %d value %q", i, m.Offset, m.Value)
			}
		case err := <-pc.Errors():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatalf("consumed %d of 10", i)
		}
	}
}

// groupHandler counts messages and marks them consumed.
type groupHandler struct {
	mu   sync.Mutex
	seen map[string]bool
	want int
	done chan struct{}
}

func (h *groupHandler) Setup(sarama.ConsumerGroupSession) error   { return nil }
func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }
func (h *groupHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		s.MarkMessage(m, "")
		h.mu.Lock()
		h.seen[string(m.Value)] = true
		if len(h.seen) == h.want {
			close(h.done)
		}
		h.mu.Unlock()
	}
	return nil
}

func TestSaramaConsumerGroupCommits(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "shipments", 3)
	produceN(t, tb.client(t, writerKey), "shipments", 0, 30)

	cfg := saramaConfig(readerKey)
	cfg.Consumer.Offsets.AutoCommit.Interval = 100 * time.Millisecond
	group, err := sarama.NewConsumerGroup([]string{tb.Addr().String()}, "sarama-group", cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := &groupHandler{seen: map[string]bool{}, want: 30, done: make(chan struct{})}
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			group.Consume(ctx, []string{"shipments"}, h)
		}
	}()
	select {
	case <-h.done:
	case <-ctx.Done():
		t.Fatalf("consumed %d of 30", len(h.seen))
	}
	cancel()
	group.Close() // commits the marked offsets
	offsets, err := tb.admin(t, readerKey).FetchOffsets(testCtx(t), "sarama-group")
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, ps := range offsets {
		for _, o := range ps {
			total += o.At
		}
	}
	if total != 30 {
		t.Fatalf("committed offsets sum to %d, want 30", total)
	}
}
