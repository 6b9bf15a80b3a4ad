package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// Offsets in a v2 record batch the broker rewrites for LogAppendTime.
const (
	batchCRCOffset   = 17
	batchAttrOffset  = 21
	batchMaxTsOffset = 35
)

// maxDecompressedBatch bounds what checking a compressed batch's record
// keys may decompress: a small batch that inflates beyond it is refused
// rather than allowed to exhaust memory.
const maxDecompressedBatch = 64 << 20

// admitBatch applies the topic's configs to a produced batch: its size
// against max.message.bytes, keys on a compacted topic, and with
// message.timestamp.type=LogAppendTime the append time stamped into the
// batch (returned; else -1). meta is updated to match.
func (b *Broker) admitBatch(t *topic, data []byte, meta *seglog.BatchMeta) (int64, *kerr.Error, string) {
	s := t.settings.Load()
	if int64(len(data)) > s.maxMessageBytes {
		return -1, kerr.MessageTooLarge, fmt.Sprintf("the record batch is %d bytes; the topic's max.message.bytes is %d", len(data), s.maxMessageBytes)
	}
	if s.compact {
		if why := keylessRecord(data); why != "" {
			return -1, kerr.InvalidRecord, why
		}
	}
	if !s.logAppendTime {
		return -1, nil, ""
	}
	now := b.clock.Now().UnixMilli()
	stampLogAppendTime(data, now)
	meta.FirstTimestamp, meta.MaxTimestamp = now, now
	return now, nil, ""
}

// stampLogAppendTime marks a batch's timestamps as the log's and sets its
// max timestamp, which consumers then give every record, as a Kafka broker
// does; the CRC covers both, so it is computed again.
func stampLogAppendTime(data []byte, now int64) {
	attrs := binary.BigEndian.Uint16(data[batchAttrOffset:])
	binary.BigEndian.PutUint16(data[batchAttrOffset:], attrs|attrLogAppendTime)
	binary.BigEndian.PutUint64(data[batchMaxTsOffset:], uint64(now))
	binary.BigEndian.PutUint32(data[batchCRCOffset:], crc32.Checksum(data[batchCRCStart:], castagnoli))
}

// keylessRecord says why a batch cannot go to a compacted topic ("" if it
// can): every record needs a key, since compaction keeps the newest record
// of each key.
func keylessRecord(data []byte) string {
	var b kmsg.RecordBatch
	if err := b.ReadFrom(data); err != nil {
		return "record batch does not decode"
	}
	raw, err := decompressBounded(b.Records, b.Attributes&attrCompression)
	if err != nil {
		return "record batch does not decompress: " + err.Error()
	}
	for i := int32(0); i < b.NumRecords; i++ {
		n, used := binary.Varint(raw)
		if used <= 0 || n < 0 || int64(len(raw)-used) < n {
			return "record batch's records do not decode"
		}
		var r kmsg.Record
		if err := r.ReadFrom(raw[:used+int(n)]); err != nil {
			return "record batch's records do not decode"
		}
		if r.Key == nil {
			return "compacted topics need a key on every record (cleanup.policy includes compact)"
		}
		raw = raw[used+int(n):]
	}
	return ""
}

var errTooLarge = errors.New("it inflates beyond the broker's limit")

// decompressBounded decompresses a batch's records with the batch's codec
// (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd), up to maxDecompressedBatch.
func decompressBounded(src []byte, codec int16) ([]byte, error) {
	var r io.Reader
	switch codec {
	case 0:
		return src, nil
	case 1:
		zr, err := gzip.NewReader(bytes.NewReader(src))
		if err != nil {
			return nil, err
		}
		r = zr
	case 2:
		return unsnappy(src)
	case 3:
		r = lz4.NewReader(bytes.NewReader(src))
	case 4:
		zr, err := zstd.NewReader(bytes.NewReader(src), zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxDecompressedBatch))
		if err != nil {
			return nil, err
		}
		defer zr.Close()
		r = zr
	default:
		return nil, errors.New("unknown codec")
	}
	out, err := io.ReadAll(io.LimitReader(r, maxDecompressedBatch+1))
	if err != nil {
		return nil, err
	}
	if len(out) > maxDecompressedBatch {
		return nil, errTooLarge
	}
	return out, nil
}

// xerialPrefix starts snappy data framed by the Java client.
var xerialPrefix = []byte{130, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// unsnappy decodes raw snappy, or xerial-framed blocks of it, checking each
// block's declared size before decoding it.
func unsnappy(src []byte) ([]byte, error) {
	if !bytes.HasPrefix(src, xerialPrefix) {
		return unsnappyBlock(nil, src)
	}
	if len(src) < 16 {
		return nil, errors.New("short xerial header")
	}
	var out []byte
	for rest := src[16:]; len(rest) > 0; {
		if len(rest) < 4 {
			return nil, errors.New("truncated xerial block")
		}
		n := binary.BigEndian.Uint32(rest)
		if uint64(len(rest)-4) < uint64(n) {
			return nil, errors.New("truncated xerial block")
		}
		var err error
		if out, err = unsnappyBlock(out, rest[4:4+n]); err != nil {
			return nil, err
		}
		rest = rest[4+n:]
	}
	return out, nil
}

func unsnappyBlock(dst, block []byte) ([]byte, error) {
	n, err := snappy.DecodedLen(block)
	if err != nil {
		return nil, err
	}
	if len(dst)+n > maxDecompressedBatch {
		return nil, errTooLarge
	}
	dec, err := snappy.Decode(nil, block)
	if err != nil {
		return nil, err
	}
	return append(dst, dec...), nil
}
