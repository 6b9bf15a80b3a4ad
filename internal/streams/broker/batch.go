package broker

import (
	"encoding/binary"
	"hash/crc32"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// Record batch v2 layout: baseOffset(8) length(4) partitionLeaderEpoch(4)
// magic(1) crc(4) attributes(2) ... The CRC covers bytes 21 onwards, so the
// broker may rewrite the first 16 bytes without recomputing it.
const (
	batchHeaderLen      = 61
	batchLengthOverhead = 12 // baseOffset and length are not counted by length
	batchCRCStart       = 21

	attrCompression   = 0x07
	attrLogAppendTime = 0x08
	attrTransactional = 0x10
	attrControl       = 0x20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// parseBatch checks one produced record batch and returns what the log must
// know of it. Produce v3+ carries exactly one magic-2 batch per partition.
func parseBatch(data []byte) (seglog.BatchMeta, *kerr.Error, string) {
	var b kmsg.RecordBatch
	if len(data) < batchHeaderLen {
		return seglog.BatchMeta{}, kerr.CorruptMessage, "record batch is shorter than its header"
	}
	if err := b.ReadFrom(data); err != nil {
		return seglog.BatchMeta{}, kerr.CorruptMessage, "record batch does not decode"
	}
	switch {
	case b.Magic != 2:
		return seglog.BatchMeta{}, kerr.UnsupportedForMessageFormat, "only record batches of magic 2 are accepted"
	case int(b.Length) != len(data)-batchLengthOverhead:
		return seglog.BatchMeta{}, kerr.CorruptMessage, "record batch length does not match the data: exactly one batch per partition"
	case uint32(b.CRC) != crc32.Checksum(data[batchCRCStart:], castagnoli):
		return seglog.BatchMeta{}, kerr.CorruptMessage, "record batch CRC does not match"
	case b.NumRecords < 1 || b.LastOffsetDelta != b.NumRecords-1:
		return seglog.BatchMeta{}, kerr.InvalidRecord, "record batch count does not match its last offset delta"
	case b.Attributes&attrCompression > 4:
		return seglog.BatchMeta{}, kerr.UnsupportedCompressionType, "unknown compression codec"
	case b.Attributes&attrControl != 0:
		return seglog.BatchMeta{}, kerr.InvalidRecord, "clients may not produce control batches"
	}
	return seglog.BatchMeta{
		Records:        b.LastOffsetDelta + 1,
		FirstTimestamp: b.FirstTimestamp,
		MaxTimestamp:   b.MaxTimestamp,
		ProducerID:     b.ProducerID,
		ProducerEpoch:  b.ProducerEpoch,
		BaseSequence:   b.FirstSequence,
	}, nil, ""
}

// stampBatch sets the offset the log assigned and our leader epoch (0) in a
// stored batch about to be served; the CRC does not cover these bytes.
func stampBatch(data []byte, base int64) {
	binary.BigEndian.PutUint64(data[0:8], uint64(base))
	binary.BigEndian.PutUint32(data[12:16], 0)
}
