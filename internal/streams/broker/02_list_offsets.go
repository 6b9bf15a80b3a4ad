package broker

import (
	"context"
	"encoding/binary"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	listLatest   = -1
	listEarliest = -2
)

// handleListOffsets answers the earliest (-2), latest (-1) or first offset at
// or after a timestamp; read_committed's latest is the last stable offset.
func (c *conn) handleListOffsets(ctx context.Context, r *kmsg.ListOffsetsRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.ListOffsetsResponse)
	for _, rt := range r.Topics {
		t := c.b.topics.byNameOrNil(rt.Topic)
		allowed := c.mayTopic(t, rt.Topic, Reader)
		st := kmsg.NewListOffsetsResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewListOffsetsResponseTopicPartition()
			sp.Partition = rp.Partition
			sp.Timestamp, sp.Offset = -1, -1
			p, kerrr := c.b.leaderPartition(t, rp.Partition)
			switch {
			case !allowed:
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
			case kerrr != nil:
				sp.ErrorCode = kerrr.Code
			case rp.Timestamp == listLatest && r.IsolationLevel == 1:
				sp.Offset = c.b.txns.stableOffset(t.id, p.index, p.log.EndOffset())
			case rp.Timestamp == listLatest:
				sp.Offset = p.log.EndOffset()
			case rp.Timestamp == listEarliest:
				sp.Offset = p.log.StartOffset()
			case rp.Timestamp < 0:
				sp.ErrorCode = kerr.InvalidRequest.Code // -3 and the tiered-storage lookups
			default:
				c.offsetAtTime(ctx, p, rp.Timestamp, &sp)
			}
			if r.Version == 0 && sp.ErrorCode == 0 {
				sp.OldStyleOffsets = []int64{sp.Offset}
			}
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}

// offsetAtTime finds the first record whose timestamp is at or after ts:
// the log's index finds the first batch whose largest timestamp is, and the
// records inside it say which of them is the first, as Kafka answers. A
// batch that cannot be read or decoded answers with its base offset.
func (c *conn) offsetAtTime(ctx context.Context, p *partition, ts int64, sp *kmsg.ListOffsetsResponseTopicPartition) {
	off := p.log.OffsetForTimestamp(ts)
	if off < 0 || off >= p.log.EndOffset() {
		return // no record that late: offset -1
	}
	sp.Offset, sp.Timestamp = off, ts
	batches, err := p.log.Read(ctx, off, 1)
	if err != nil || len(batches) == 0 {
		return
	}
	b := batches[0]
	sp.Timestamp = max(b.Meta.FirstTimestamp, min(ts, b.Meta.MaxTimestamp))
	if o, t, ok := firstRecordAt(b.Data, b.Meta.BaseOffset, ts); ok && o >= off {
		sp.Offset, sp.Timestamp = o, t
	}
}

// firstRecordAt returns the offset and timestamp of the first record at or
// after ts in a stored batch whose first offset is base.
func firstRecordAt(data []byte, base, ts int64) (int64, int64, bool) {
	var rb kmsg.RecordBatch
	if err := rb.ReadFrom(data); err != nil {
		return 0, 0, false
	}
	if rb.Attributes&attrLogAppendTime != 0 {
		// Every record of the batch has the batch's time.
		return base, rb.MaxTimestamp, rb.MaxTimestamp >= ts
	}
	raw := rb.Records
	if codec := rb.Attributes & attrCompression; codec != 0 {
		plain, err := decompressor.Decompress(raw, kgo.CompressionCodecType(codec))
		if err != nil {
			return 0, 0, false
		}
		raw = plain
	}
	for range rb.NumRecords {
		var r kmsg.Record
		n, ok := recordLength(raw)
		if !ok || r.ReadFrom(raw[:n]) != nil {
			return 0, 0, false
		}
		raw = raw[n:]
		if t := rb.FirstTimestamp + r.TimestampDelta64; t >= ts {
			return base + int64(r.OffsetDelta), t, true
		}
	}
	return 0, 0, false
}

// decompressor decompresses record batches with franz-go's codecs.
var decompressor = kgo.DefaultDecompressor()

// recordLength is the size of the record at the start of raw: its varint
// length prefix and what it counts.
func recordLength(raw []byte) (int, bool) {
	l, n := binary.Varint(raw)
	if n <= 0 || l < 0 || int64(len(raw)-n) < l {
		return 0, false
	}
	return n + int(l), true
}
