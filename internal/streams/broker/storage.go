package broker

import (
	"context"
	"time"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// Storage is the deployment's encrypted disk as the broker sees it. Every
// topic name, group name and committed offset goes through GetMeta/PutMeta
// (which the real store encrypts); the broker itself never writes a file.
type Storage interface {
	GetMeta(key string) ([]byte, bool)
	PutMeta(key string, value []byte) error // durable on return
	DeleteMeta(key string) error
	ListMeta(prefix string) map[string][]byte
	Partition(name string, create bool) (PartitionLog, error) // name [A-Za-z0-9_-]+: use topic IDs, never topic names
	DropPartition(name string) error
}

// PartitionLog is one partition's log. It assigns offsets; the stored batch
// bytes keep whatever baseOffset the producer sent.
type PartitionLog interface {
	// AppendAsync stores a batch (without keeping data) and returns its base
	// offset and, when the store syncs, durable, which waits until the batch
	// is on disk: the batch is acknowledged only after that.
	AppendAsync(ctx context.Context, m seglog.BatchMeta, data []byte) (base int64, durable func() error, err error)
	Read(ctx context.Context, from int64, maxBytes int32) ([]seglog.StoredBatch, error) // batches with LastOffset >= from; >=1 if any
	// ReadAppend is Read with the batches' bytes appended back to back to
	// dst (returned grown as buf); batches is that part of buf.
	ReadAppend(ctx context.Context, from int64, maxBytes int32, dst []byte) (buf, batches []byte, metas []seglog.BatchMeta, err error)
	// FirstBatchSize is the size of the first batch a read from offset
	// returns, or 0 when there is none.
	FirstBatchSize(from int64) int32
	StartOffset() int64
	EndOffset() int64
	OffsetForTimestamp(ts int64) int64
	Tail(n int) []seglog.BatchMeta
	DeleteBefore(offset int64) error
	Retain(now time.Time, retentionMs, retentionBytes int64) error
	Changed() <-chan struct{}
	SizeBytes() int64
}
