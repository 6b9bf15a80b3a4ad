package broker

import (
	"encoding/binary"
	"hash/crc32"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// testBatch encodes a magic-2 record batch as an idempotent producer would.
func testBatch(pid int64, epoch int16, seq int32, values ...string) []byte {
	var recs []byte
	for i, v := range values {
		r := kmsg.Record{OffsetDelta: int32(i), Value: []byte(v)}
		r.Length = int32(len(r.AppendTo(nil)) - 1) // length of what follows the length varint
		recs = r.AppendTo(recs)
	}
	now := time.Now().UnixMilli()
	b := kmsg.RecordBatch{
		Length: int32(batchHeaderLen - batchLengthOverhead + len(recs)), PartitionLeaderEpoch: -1, Magic: 2,
		LastOffsetDelta: int32(len(values) - 1), FirstTimestamp: now, MaxTimestamp: now,
		ProducerID: pid, ProducerEpoch: epoch, FirstSequence: seq, NumRecords: int32(len(values)), Records: recs,
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[17:21], crc32.Checksum(out[batchCRCStart:], castagnoli))
	return out
}

// rawProducer sends hand-built produce requests through a franz-go client.
type rawProducer struct {
	t     *testing.T
	cl    *kgo.Client
	topic string
	id    [16]byte
}

func newRawProducer(t *testing.T, tb testBroker, topic string) rawProducer {
	info, err := tb.Topic(t.Context(), topic)
	if err != nil {
		t.Fatal(err)
	}
	rp := rawProducer{t: t, cl: tb.client(t, writerKey), topic: topic}
	copy(rp.id[:], mustUUID(t, info.ID))
	return rp
}

func (rp rawProducer) initProducerID() int64 {
	req := kmsg.NewPtrInitProducerIDRequest()
	req.ProducerID, req.ProducerEpoch = -1, -1
	resp, err := req.RequestWith(testCtx(rp.t), rp.cl)
	if err != nil || resp.ErrorCode != 0 {
		rp.t.Fatalf("InitProducerId: %v, code %d", err, resp.ErrorCode)
	}
	return resp.ProducerID
}

func (rp rawProducer) produce(batch []byte) (int64, error) {
	req := kmsg.NewPtrProduceRequest()
	req.Acks, req.TimeoutMillis = -1, 5000
	rt := kmsg.NewProduceRequestTopic()
	rt.Topic, rt.TopicID = rp.topic, rp.id
	rt.Partitions = []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: batch}}
	req.Topics = append(req.Topics, rt)
	resp, err := req.RequestWith(testCtx(rp.t), rp.cl)
	if err != nil {
		rp.t.Fatal(err)
	}
	p := resp.Topics[0].Partitions[0]
	return p.BaseOffset, kerr.ErrorForCode(p.ErrorCode)
}

func TestIdempotentProduceStoresDuplicatesOnce(t *testing.T) {
	store := newMemStore()
	tb := startBroker(t, store)
	tb.mustCreate(t, "payments", 1)
	rp := newRawProducer(t, tb, "payments")
	pid := rp.initProducerID()

	steps := []struct {
		name    string
		batch   []byte
		wantOff int64
		wantErr error
	}{
		{"first batch", testBatch(pid, 0, 0, "a", "b", "c"), 0, nil},
		{"retried first batch", testBatch(pid, 0, 0, "a", "b", "c"), 0, nil},
		{"next batch", testBatch(pid, 0, 3, "d"), 3, nil},
		{"retried older batch", testBatch(pid, 0, 0, "a", "b", "c"), 0, nil},
		{"gap in sequence", testBatch(pid, 0, 10, "x"), -1, kerr.OutOfOrderSequenceNumber},
		{"new epoch not from zero", testBatch(pid, 1, 5, "x"), -1, kerr.OutOfOrderSequenceNumber},
		{"new epoch from zero", testBatch(pid, 1, 0, "e"), 4, nil},
		{"old epoch", testBatch(pid, 0, 4, "x"), -1, kerr.InvalidProducerEpoch},
	}
	for _, s := range steps {
		off, err := rp.produce(s.batch)
		if err != s.wantErr || (err == nil && off != s.wantOff) {
			t.Fatalf("%s: offset %d err %v, want %d %v", s.name, off, err, s.wantOff, s.wantErr)
		}
	}
	if end := endOffset(t, tb, "payments"); end != 5 {
		t.Fatalf("log end offset %d, want 5: duplicates were stored", end)
	}

	// After a restart the window is rebuilt from the log's tail, and the
	// producer id counter never hands out an old id.
	tb.Close()
	tb = startBroker(t, store)
	rp = newRawProducer(t, tb, "payments")
	if off, err := rp.produce(testBatch(pid, 1, 0, "e")); err != nil || off != 4 {
		t.Fatalf("retry after restart: offset %d err %v, want 4", off, err)
	}
	if end := endOffset(t, tb, "payments"); end != 5 {
		t.Fatalf("log end offset after restart %d, want 5", end)
	}
	if next := rp.initProducerID(); next <= pid {
		t.Fatalf("producer id %d reused after restart (had %d)", next, pid)
	}
}

func endOffset(t *testing.T, tb testBroker, topic string) int64 {
	tp := tb.topics.byNameOrNil(topic)
	return tb.topics.partitions(tp)[0].log.EndOffset()
}

func TestProduceRejectsBadBatches(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "audit", 1)
	rp := newRawProducer(t, tb, "audit")
	good := testBatch(-1, -1, -1, "ok")
	corrupt := func(f func([]byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	tests := []struct {
		name  string
		batch []byte
		want  error
	}{
		{"flipped record byte", corrupt(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), kerr.CorruptMessage},
		{"length lies", corrupt(func(b []byte) []byte { binary.BigEndian.PutUint32(b[8:], 999); return b }), kerr.CorruptMessage},
		{"two batches", append(append([]byte(nil), good...), good...), kerr.CorruptMessage},
		{"magic 1", corrupt(func(b []byte) []byte { b[16] = 1; return b }), kerr.UnsupportedForMessageFormat},
		{"truncated header", good[:30], kerr.CorruptMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := rp.produce(tt.batch); err != tt.want {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	if off, err := rp.produce(good); err != nil || off != 0 {
		t.Fatalf("good batch after bad ones: offset %d err %v", off, err)
	}
}
