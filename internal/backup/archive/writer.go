package archive

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"io"
	"math/bits"
	"runtime"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// WriterOptions describe a new backup.
type WriterOptions struct {
	BackupID  string    // required, 1 to 64 bytes
	Created   time.Time // required; from the service's clock
	ChunkSize int       // record bytes per sealed chunk; DefaultChunkSize when 0
	// Level is the zstd level; SpeedFastest when 0. Many batches come
	// compressed by their producers already, and the fastest level keeps
	// a backup about as fast as the disk.
	Level zstd.EncoderLevel
	// Concurrency is the number of chunks compressed and sealed at once;
	// GOMAXPROCS when 0.
	Concurrency int
}

// Writer writes one backup as a stream: Begin with the contents, PutMeta
// for every metadata entry, then for each partition BeginPartition and
// PutBatch for each of its batches, then Close. Nothing is buffered beyond
// the chunks being compressed and sealed (two per core). A Writer is not
// safe for concurrent use.
type Writer struct {
	header  Header
	chunks  *chunkWriter
	seq     sequence
	scratch []byte
	err     error // sticky: after a failure the backup cannot be completed
	closed  bool
}

// NewWriter makes a fresh 256-bit DEK for this backup alone, has keys wrap
// it, and writes the plain header to dst. The plain DEK never leaves the
// Writer's cipher.
func NewWriter(ctx context.Context, dst io.Writer, keys KeyWrapper, opts WriterOptions) (*Writer, error) {
	const op = "backup/archive.NewWriter"
	if opts.ChunkSize == 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.Level == 0 {
		opts.Level = zstd.SpeedFastest
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = runtime.GOMAXPROCS(0)
	}
	if opts.Created.IsZero() {
		return nil, errs.E(op, errs.Invalid, "CREATED_REQUIRED", "The backup's creation time is required")
	}
	// Checked before the root key is asked to wrap anything.
	if err := checkLayout(op, opts.BackupID, opts.ChunkSize); err != nil {
		return nil, err
	}
	dek := seal.RandomKey()
	defer seal.Wipe(dek)
	wrapped, err := keys.WrapDEK(ctx, dek)
	if err != nil {
		return nil, err
	}
	h := Header{Version: FormatVersion, BackupID: opts.BackupID, Created: opts.Created.UTC(), ChunkSize: opts.ChunkSize, WrappedDEK: wrapped}
	if err := checkHeader(op, h); err != nil {
		return nil, err
	}
	hb, identity := encodeHeader(h)
	block, err := aes.NewCipher(dek)
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	if _, err := dst.Write(hb); err != nil {
		return nil, writeError(op, err)
	}
	enc, err := zstd.NewWriter(nil,
		zstd.WithEncoderLevel(opts.Level),
		zstd.WithEncoderConcurrency(opts.Concurrency),
		// Each chunk is one frame: a window past the chunk buys nothing.
		zstd.WithWindowSize(1<<(bits.Len(uint(min(opts.ChunkSize, 1<<20)))-1)),
		// GCM authenticates every byte; a second checksum buys nothing.
		zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	return &Writer{header: h, chunks: newChunkWriter(dst, gcm, enc, identity, opts.ChunkSize, opts.Concurrency)}, nil
}

// Header is the plain header this Writer wrote.
func (w *Writer) Header() Header { return w.header }

// writeError keeps a volume's errs value and hides anything else.
func writeError(op string, err error) error {
	if errs.As(err) != nil {
		return err
	}
	return errs.E(op, errs.Unavailable, "BACKUP_WRITE_FAILED", "The backup could not be written to its volume").Because(err)
}

func (w *Writer) check(op string, seqErr error) error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return errs.E(op, errs.Conflict, "BACKUP_CLOSED", "The backup is already closed")
	}
	if seqErr != nil {
		w.err = errs.E(op, errs.Invalid, "BACKUP_RECORD_INVALID", "Backup records out of order: "+seqErr.Error())
		return w.err
	}
	return nil
}

func (w *Writer) write(op string, parts ...[]byte) error {
	for _, p := range parts {
		if _, err := w.chunks.Write(p); err != nil {
			w.err = writeError(op, err)
			return w.err
		}
	}
	return nil
}

// Begin writes the table of contents: what the records that follow cover.
func (w *Writer) Begin(c Contents) error {
	const op = "backup/archive.Begin"
	if err := w.check(op, w.seq.begin(c)); err != nil {
		return err
	}
	return w.write(op, appendContents(w.scratch[:0], c))
}

// PutMeta writes one metadata entry.
func (w *Writer) PutMeta(key string, value []byte) error {
	const op = "backup/archive.PutMeta"
	if len(key) > maxKeyLen || len(value) > maxValueLen {
		return w.check(op, errTooLarge)
	}
	if err := w.check(op, w.seq.meta()); err != nil {
		return err
	}
	b := append(w.scratch[:0], byte(RecordMeta))
	b = appendString(b, key)
	b = binary.AppendUvarint(b, uint64(len(value)))
	w.scratch = b
	return w.write(op, b, value)
}

// BeginPartition starts the next partition the contents list.
func (w *Writer) BeginPartition(p PartitionRange) error {
	const op = "backup/archive.BeginPartition"
	if err := w.check(op, w.seq.partition(p)); err != nil {
		return err
	}
	w.scratch = appendRange(append(w.scratch[:0], byte(RecordPartition)), p)
	return w.write(op, w.scratch)
}

// PutBatch writes the partition's next batch: the first holds the
// partition's start offset, each next one starts where the last ended, and
// the last ends at the end offset.
func (w *Writer) PutBatch(m seglog.BatchMeta, data []byte) error {
	const op = "backup/archive.PutBatch"
	if len(data) > maxBatchLen {
		return w.check(op, errTooLarge)
	}
	if err := w.check(op, w.seq.batch(m)); err != nil {
		return err
	}
	w.scratch = appendBatchHead(w.scratch[:0], m, len(data))
	return w.write(op, w.scratch, data)
}

var errTooLarge = errorString("a record is too large")

type errorString string

func (e errorString) Error() string { return string(e) }

// Close checks that every promised record was written, then writes the
// end, flushes the compressor and seals the final chunk. The backup is
// complete only when Close returns nil; the caller then commits the
// volume object.
func (w *Writer) Close() error {
	const op = "backup/archive.Close"
	if err := w.check(op, w.seq.end()); err != nil {
		w.Abort()
		return err
	}
	w.closed = true
	err := w.write(op, []byte{byte(recordEnd)})
	if err == nil {
		err = w.chunks.close(op)
	}
	if err != nil {
		w.err = err
		w.chunks.abort()
	}
	return err
}

// Abort gives up on the backup and stops the compressor. The caller
// discards what was written (volume.Abort).
func (w *Writer) Abort() {
	if !w.closed {
		w.closed = true
		if w.err == nil {
			w.err = errs.E("backup/archive.Abort", errs.Conflict, "BACKUP_ABORTED", "The backup was abandoned")
		}
		w.chunks.abort()
	}
}
