package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strconv"
	"sync/atomic"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// compactingLog is a partition log the log cleaner can compact; the
// deployment's seglog partitions are.
type compactingLog interface {
	Compact(ctx context.Context, c seglog.Compaction) (seglog.CompactStats, error)
}

// CompactionTotals is what the log cleaner has done since the broker
// started.
type CompactionTotals struct {
	Passes       int64 // passes that rewrote at least one segment
	Segments     int64
	ReadBytes    int64
	WrittenBytes int64
	Removed      int64 // records left out
}

type compactionCounters struct {
	passes, segments, read, written, removed atomic.Int64
}

// Compaction reports the log cleaner's totals.
func (b *Broker) Compaction() CompactionTotals {
	c := &b.cleaner
	return CompactionTotals{c.passes.Load(), c.segments.Load(), c.read.Load(), c.written.Load(), c.removed.Load()}
}

// runCompaction cleans the partitions of topics whose cleanup.policy
// includes compact, one at a time, each CompactionInterval until the broker
// closes; closing stops a pass in progress.
func (b *Broker) runCompaction() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-b.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	b.every(b.cfg.CompactionInterval, nil, func() { b.CompactNow(ctx) })
}

// CompactNow runs one compaction pass over every partition of a topic whose
// cleanup.policy includes compact, one partition at a time, as the
// background cleaner does each CompactionInterval.
func (b *Broker) CompactNow(ctx context.Context) {
	if b.follows() {
		return // the leader compacts
	}
	for _, t := range b.topics.list() {
		s := t.settings.Load()
		if !s.compact {
			continue
		}
		ratio, _ := strconv.ParseFloat(s.value(cfgMinCleanableDirtyRatio), 64)
		c := seglog.Compaction{
			MinDirtyRatio:     ratio,
			MinLagMs:          s.int(cfgMinCompactionLagMs),
			DeleteRetentionMs: s.int(cfgDeleteRetentionMs),
			Rebuild:           rebuildBatch,
		}
		for _, p := range b.topics.partitions(t) {
			log, ok := p.log.(compactingLog)
			if !ok || ctx.Err() != nil {
				continue
			}
			c.Now = b.clock.Now()
			// As Kafka's cleaner: records of aborted transactions go (they
			// must not stand for their keys), and nothing at or past the last
			// stable offset is cleaned while its transaction may still abort.
			id, index := t.id, p.index
			aborted := b.txns.abortedList(id, index)
			c.Records = func(m seglog.BatchMeta, data []byte) ([]seglog.Record, bool, error) {
				if transactional(data) && inAborted(aborted, m.ProducerID, m.BaseOffset) {
					return nil, false, nil
				}
				return kafkaRecords(m, data)
			}
			c.Stable = func() int64 { return b.txns.stableOffset(id, index, p.log.EndOffset()) }
			st, err := log.Compact(ctx, c)
			if err != nil {
				if ctx.Err() == nil {
					b.log.Warn("compaction failed", "topic_id", t.id.String(), "partition", p.index, "err", err)
				}
				continue
			}
			if st.Segments > 0 {
				b.cleaner.passes.Add(1)
				b.cleaner.segments.Add(int64(st.Segments))
				b.cleaner.read.Add(st.ReadBytes)
				b.cleaner.written.Add(st.WrittenBytes)
				b.cleaner.removed.Add(st.Removed)
			}
		}
	}
}

// inAborted reports whether a transactional batch of producer pid at offset
// lies in one of the partition's aborted transactions: from the entry's
// first offset up to its abort marker.
func inAborted(aborted []abortedTxn, pid, offset int64) bool {
	for _, a := range aborted {
		if a.ProducerID == pid && a.First <= offset && offset < a.Last {
			return true
		}
	}
	return false
}

var errRecords = errors.New("stored batch's records do not decode")

// kafkaRecords lists a stored record batch's records for the log cleaner.
// Control batches (transaction markers) are kept whole.
func kafkaRecords(m seglog.BatchMeta, data []byte) ([]seglog.Record, bool, error) {
	var b kmsg.RecordBatch
	if err := b.ReadFrom(data); err != nil {
		return nil, false, errRecords
	}
	if b.Attributes&attrControl != 0 {
		return nil, true, nil
	}
	raw, err := decompressBounded(b.Records, b.Attributes&attrCompression)
	if err != nil {
		return nil, false, err
	}
	recs := make([]seglog.Record, 0, b.NumRecords)
	for range b.NumRecords {
		n, ok := recordLength(raw)
		var r kmsg.Record
		if !ok || r.ReadFrom(raw[:n]) != nil {
			return nil, false, errRecords
		}
		ts := b.FirstTimestamp + r.TimestampDelta64
		if b.Attributes&attrLogAppendTime != 0 {
			ts = b.MaxTimestamp
		}
		recs = append(recs, seglog.Record{Offset: m.BaseOffset + int64(r.OffsetDelta), Timestamp: ts, Key: r.Key, Tombstone: r.Value == nil, Raw: raw[:n]})
		raw = raw[n:]
	}
	return recs, false, nil
}

// rebuildBatch is the batch holding only keep, as Kafka's cleaner writes
// it: same base offset, last offset delta, timestamps and producer fields,
// fewer records. The records go uncompressed.
func rebuildBatch(_ seglog.BatchMeta, data []byte, keep []seglog.Record) ([]byte, error) {
	var b kmsg.RecordBatch
	if err := b.ReadFrom(data); err != nil {
		return nil, errRecords
	}
	b.Attributes &^= attrCompression
	b.NumRecords = int32(len(keep))
	b.Records = nil
	for _, r := range keep {
		b.Records = append(b.Records, r.Raw...)
	}
	out := b.AppendTo(make([]byte, 0, batchHeaderLen+len(b.Records)))
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-batchLengthOverhead))
	binary.BigEndian.PutUint32(out[batchCRCOffset:], crc32.Checksum(out[batchCRCStart:], castagnoli))
	return out, nil
}
