package broker

import (
	"testing"

	"github.com/IBM/sarama"
)

func TestSaramaTransactionalProducerAndReadCommitted(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "invoices", 1)
	addrs := []string{tb.Addr().String()}
	pcfg := saramaConfig(writerKey)
	pcfg.Producer.Partitioner = sarama.NewManualPartitioner
	pcfg.Producer.Idempotent, pcfg.Net.MaxOpenRequests = true, 1
	pcfg.Producer.Transaction.ID = "sarama-invoicer"
	prod, err := sarama.NewSyncProducer(addrs, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	send := func(values []string, commit bool) {
		t.Helper()
		if err := prod.BeginTxn(); err != nil {
			t.Fatal(err)
		}
		for _, v := range values {
			if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "invoices", Partition: 0, Value: sarama.StringEncoder(v)}); err != nil {
				t.Fatal(err)
			}
		}
		end := prod.AbortTxn
		if commit {
			end = prod.CommitTxn
		}
		if err := end(); err != nil {
			t.Fatal(err)
		}
	}
	send([]string{"paid-1", "paid-2"}, true)
	send([]string{"void-1", "void-2"}, false)
	send([]string{"paid-3"}, true)

	ccfg := saramaConfig(readerKey)
	ccfg.Consumer.IsolationLevel = sarama.ReadCommitted
	cons, err := sarama.NewConsumer(addrs, ccfg)
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
	for _, want := range []string{"paid-1", "paid-2", "paid-3"} {
		select {
		case m := <-pc.Messages():
			if string(m.Value) != want {
				t.Fatalf("read_committed read %q, want %q", m.Value, want)
			}
		case err := <-pc.Errors():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatalf("waiting for %s", want)
		}
	}
}
