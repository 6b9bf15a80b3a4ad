package archive

import (
	"context"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// PartitionLog is a partition as a backup reads it and a restore writes
// it: seglog's on local disk and objlog's on object storage.
type PartitionLog interface {
	StartOffset() int64
	EndOffset() int64
	Read(ctx context.Context, from int64, maxBytes int32) ([]seglog.StoredBatch, error)
	// AppendAt stores a batch at its own base offset, at or after the end
	// (a compacted log has gaps), and returns once it is durable.
	AppendAt(ctx context.Context, m seglog.BatchMeta, data []byte) (int64, error)
	DeleteBefore(offset int64) error
}

// LogStore is a deployment's log as backups use it; its Partition returns
// its own partition type, as seglog's and objlog's do.
type LogStore[P PartitionLog] interface {
	ListMeta(prefix string) map[string][]byte
	PutMeta(key string, value []byte) error
	Partitions() []string
	Partition(name string, create bool) (P, error)
	CreatePartitionAt(name string, start int64) (P, error)
}

// Log is any LogStore, whatever its partition type (see LogOf).
type Log = LogStore[PartitionLog]

// LogOf is st as a Log.
func LogOf[P PartitionLog](st LogStore[P]) Log { return logOf[P]{st} }

type logOf[P PartitionLog] struct{ LogStore[P] }

// Partition returns a nil PartitionLog, not a typed nil, on error.
func (l logOf[P]) Partition(name string, create bool) (PartitionLog, error) {
	p, err := l.LogStore.Partition(name, create)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// CreatePartitionAt returns a nil PartitionLog, not a typed nil, on error.
func (l logOf[P]) CreatePartitionAt(name string, start int64) (PartitionLog, error) {
	p, err := l.LogStore.CreatePartitionAt(name, start)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// asyncAppender is a partition whose appends can be queued and confirmed
// later (objlog's: each append waiting for its own flush would make a
// restore take a flush window and a round trip per batch).
type asyncAppender interface {
	AppendAtAsync(ctx context.Context, m seglog.BatchMeta, data []byte) (int64, func() error, error)
}

// maxUnconfirmed bounds the bytes of batches a restore has queued and not
// yet seen durable.
const maxUnconfirmed = 8 << 20

// appender appends a restore's batches to one partition, queuing them
// where the partition allows it; wait returns once all are durable.
type appender struct {
	waits []func() error
	bytes int
}

func (a *appender) append(ctx context.Context, p PartitionLog, m seglog.BatchMeta, data []byte) (int64, error) {
	q, ok := p.(asyncAppender)
	if !ok {
		return p.AppendAt(ctx, m, data)
	}
	off, durable, err := q.AppendAtAsync(ctx, m, data)
	if err != nil {
		return off, err
	}
	a.waits, a.bytes = append(a.waits, durable), a.bytes+len(data)
	if a.bytes >= maxUnconfirmed {
		return off, a.wait()
	}
	return off, nil
}

func (a *appender) wait() error {
	waits := a.waits
	a.waits, a.bytes = nil, 0
	for _, w := range waits {
		if err := w(); err != nil {
			return err
		}
	}
	return nil
}
