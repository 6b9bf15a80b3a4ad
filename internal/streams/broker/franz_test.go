package broker

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// consume reads n records from the start of topic.
func consume(t *testing.T, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	ctx := testCtx(t)
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(got), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		got = append(got, fs.Records()...)
	}
	return got
}

func TestFranzProduceAndConsumeFromStart(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "orders", 3)
	ctx := testCtx(t)
	prod := tb.client(t, writerKey, kgo.DefaultProduceTopic("orders"))
	const n = 100
	for i := range n {
		r := &kgo.Record{Key: []byte(fmt.Sprint(i % 7)), Value: []byte(fmt.Sprintf("order-%d", i))}
		prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
	}
	if err := prod.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	cons := tb.client(t, readerKey, kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := consume(t, cons, n)
	seen := map[string]bool{}
	for _, r := range got {
		seen[string(r.Value)] = true
	}
	if len(got) != n || len(seen) != n {
		t.Fatalf("got %d records (%d distinct), want %d", len(got), len(seen), n)
	}
}

func TestRefusedLoginSaysWhy(t *testing.T) {
	tb := startBroker(t, nil)
	cl := tb.client(t, "not-a-key")
	err := cl.Ping(testCtx(t))
	if err == nil {
		t.Fatal("login with a wrong key succeeded")
	}
	if !strings.Contains(err.Error(), "the API key is not valid") {
		t.Fatalf("error %q does not carry the authenticator's reason", err)
	}
}

func TestReaderCannotProduce(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "orders", 1)
	cl := tb.client(t, readerKey, kgo.DefaultProduceTopic("orders"), kgo.DisableIdempotentWrite())
	err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("x")}).FirstErr()
	if err != kerr.TopicAuthorizationFailed {
		t.Fatalf("produce as reader: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}
}

func TestAcksZeroProduceIsStoredWithoutAnswer(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "fire-and-forget", 1)
	cl := tb.client(t, writerKey, kgo.DefaultProduceTopic("fire-and-forget"), kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	produceN(t, cl, "fire-and-forget", 0, 3)
	// A request after the unanswered produce still gets its own answer.
	if err := cl.Ping(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the records to be stored", func() bool { return endOffset(t, tb, "fire-and-forget") == 3 })
}

func TestListOffsetsByTimestamp(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "timeline", 1)
	cl := tb.client(t, writerKey)
	base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
	for i := range 3 { // one batch per minute
		r := &kgo.Record{Topic: "timeline", Value: []byte("x"), Timestamp: base.Add(time.Duration(i) * time.Minute)}
		if err := cl.ProduceSync(testCtx(t), r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	adm := tb.admin(t, readerKey)
	tests := []struct {
		name string
		list func() (kadm.ListedOffsets, error)
		want int64
	}{
		{"earliest", func() (kadm.ListedOffsets, error) { return adm.ListStartOffsets(testCtx(t), "timeline") }, 0},
		{"latest", func() (kadm.ListedOffsets, error) { return adm.ListEndOffsets(testCtx(t), "timeline") }, 3},
		{"at the second record", func() (kadm.ListedOffsets, error) {
			return adm.ListOffsetsAfterMilli(testCtx(t), base.Add(30*time.Second).UnixMilli(), "timeline")
		}, 1},
		{"after the last record", func() (kadm.ListedOffsets, error) {
			return adm.ListOffsetsAfterMilli(testCtx(t), base.Add(time.Hour).UnixMilli(), "timeline")
		}, 3}, // kadm maps "none" (-1) to the end offset
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo, err := tt.list()
			if err != nil {
				t.Fatal(err)
			}
			o, _ := lo.Lookup("timeline", 0)
			if o.Err != nil || o.Offset != tt.want {
				t.Fatalf("offset %d err %v, want %d", o.Offset, o.Err, tt.want)
			}
		})
	}
}

// TestListOffsetsByTimestampFindsTheRecordInsideABatch: replay from a time
// must start at the first record at or after it, not at its batch's start
// (kcat -Q, librdkafka's offsets_for_times and franz-go all ask this).
func TestListOffsetsByTimestampFindsTheRecordInsideABatch(t *testing.T) {
	for name, codec := range map[string]kgo.CompressionCodec{"uncompressed": kgo.NoCompression(), "zstd": kgo.ZstdCompression(),
		"lz4": kgo.Lz4Compression(), "gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression()} {
		t.Run(name, func(t *testing.T) {
			tb := startBroker(t, nil)
			tb.mustCreate(t, "timeline", 1)
			cl := tb.client(t, writerKey, kgo.ProducerBatchCompression(codec), kgo.ProducerLinger(time.Second))
			base := time.Now().Add(-time.Hour).Truncate(time.Millisecond)
			var rs []*kgo.Record
			for i := range 6 { // one batch, a record every 10 s
				rs = append(rs, &kgo.Record{Topic: "timeline", Value: []byte("payload payload payload"), Timestamp: base.Add(time.Duration(i) * 10 * time.Second)})
			}
			if err := cl.ProduceSync(testCtx(t), rs...).FirstErr(); err != nil {
				t.Fatal(err)
			}
			adm := tb.admin(t, readerKey)
			for at, want := range map[time.Duration]int64{0: 0, 25 * time.Second: 3, 30 * time.Second: 3, 50 * time.Second: 5, time.Hour: 6} {
				lo, err := adm.ListOffsetsAfterMilli(testCtx(t), base.Add(at).UnixMilli(), "timeline")
				if err != nil {
					t.Fatal(err)
				}
				o, _ := lo.Lookup("timeline", 0)
				if o.Err != nil || o.Offset != want {
					t.Fatalf("offset for +%v = %d (err %v), want %d", at, o.Offset, o.Err, want)
				}
				if want < 6 && o.Timestamp != base.Add(time.Duration(want)*10*time.Second).UnixMilli() {
					t.Fatalf("timestamp for +%v = %d, want the record's", at, o.Timestamp)
				}
			}
		})
	}
}

func TestUnknownTopicsAreNotAutoCreated(t *testing.T) {
	tb := startBroker(t, nil)
	cl := tb.client(t, writerKey)
	req := kmsg.NewPtrMetadataRequest()
	req.AllowAutoTopicCreation = true
	req.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr("ghost")}}
	resp, err := req.RequestWith(testCtx(t), cl)
	if err != nil {
		t.Fatal(err)
	}
	if code := resp.Topics[0].ErrorCode; code != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("metadata for an unknown topic: %v", kerr.ErrorForCode(code))
	}
	if len(tb.Topics(t.Context())) != 0 {
		t.Fatal("a topic was created by a metadata request")
	}
}
