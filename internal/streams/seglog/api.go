// Package seglog is a deployment's disk: partition logs and metadata, every
// block sealed with AES-256-GCM under the deployment's data encryption key.
// It knows nothing of Kafka requests: a batch is opaque bytes with a small
// header (BatchMeta) that the caller fills.
package seglog

// BatchMeta is what the log must know of a batch without the caller decoding
// it again. It is stored encrypted with the batch.
type BatchMeta struct {
	BaseOffset     int64 // assigned by Append; ignored on input
	Records        int32 // number of offsets the batch covers (lastOffsetDelta+1)
	FirstTimestamp int64 // ms
	MaxTimestamp   int64 // ms
	ProducerID     int64 // -1 when not idempotent
	ProducerEpoch  int16
	BaseSequence   int32
	Size           int32 // len(batch); set by the log
}

// LastOffset is the offset of the batch's last record.
func (m BatchMeta) LastOffset() int64 { return m.BaseOffset + int64(m.Records) - 1 }

// StoredBatch is a batch read back: its header and its plain bytes.
type StoredBatch struct {
	Meta BatchMeta
	Data []byte
}

// DEK is a data encryption key in plain form. It lives only in memory; Wipe
// zeroes it when the deployment locks.
type DEK struct {
	ID  string // names the key on disk, so blocks can say which DEK sealed them
	Key []byte // 32 bytes
}

// Wipe zeroes the key material.
func (d *DEK) Wipe() {
	for i := range d.Key {
		d.Key[i] = 0
	}
}

// BatchMetaLen is the size of an encoded BatchMeta.
const BatchMetaLen = metaLen

// AppendBatchMeta appends m's encoding (BatchMetaLen bytes), as blocks hold
// it, for other stores of batches.
func AppendBatchMeta(b []byte, m BatchMeta) []byte { return encodeMeta(b, m) }

// ParseBatchMeta decodes what AppendBatchMeta wrote; b holds at least
// BatchMetaLen bytes.
func ParseBatchMeta(b []byte) BatchMeta { return decodeMeta(b) }
