package archive

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"io"
	"runtime"
	"sync/atomic"
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
	ChunkSize int       // plaintext bytes per sealed chunk; DefaultChunkSize when 0
	// Level is the zstd level; SpeedFastest when 0. Batches are mostly
	// compressed already by producers, and the fastest level keeps a
	// backup as fast as the disk.
	Level zstd.EncoderLevel
	// Concurrency is the number of compressing goroutines; GOMAXPROCS when 0.
	Concurrency int
}

// Writer writes one backup as a stream: Begin with the contents, PutMeta
// for every metadata entry, then for each partition BeginPartition and
// PutBatch for each of its batches, then Close. Nothing is buffered beyond
// a chunk and the compressor's window. A Writer is not safe for
// concurrent use.
type Writer struct {
	header  Header
	bw      *bufio.Writer
	zw      *zstd.Encoder
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
	hb := encodeHeader(h)
	digest := sha256.Sum256(hb)
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
	cw := &chunkWriter{dst: dst, gcm: gcm, digest: digest[:], buf: make([]byte, 0, opts.ChunkSize)}
	zw, err := zstd.NewWriter(cw,
		zstd.WithEncoderLevel(opts.Level),
		zstd.WithEncoderConcurrency(opts.Concurrency),
		zstd.WithWindowSize(1<<20),
		// GCM authenticates every byte; a second checksum buys nothing.
		zstd.WithEncoderCRC(false))
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	return &Writer{header: h, zw: zw, chunks: cw, bw: bufio.NewWriterSize(zw, 256<<10)}, nil
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
		if _, err := w.bw.Write(p); err != nil {
			w.err = w.chunks.failure(op, err)
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
		if err = w.bw.Flush(); err != nil {
			err = w.chunks.failure(op, err)
		}
	}
	if err == nil {
		if err = w.zw.Close(); err != nil {
			err = w.chunks.failure(op, err)
		}
	}
	if err == nil {
		err = w.chunks.close(op)
	}
	if err != nil {
		w.err = err
		w.zw.Close()
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
		w.chunks.aborted.Store(true)
		w.zw.Close()
	}
}

// chunkWriter seals the compressed stream into chunks. A full chunk is
// sealed only when more bytes follow it, so the last one is always the one
// Close seals with the final flag.
type chunkWriter struct {
	dst     io.Writer
	gcm     cipher.AEAD
	digest  []byte
	buf     []byte
	out     []byte
	nonce   []byte
	aad     []byte
	index   uint64
	err     error       // the destination's error, kept to report it as is
	aborted atomic.Bool // set by Abort while the compressor may be writing
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	if c.aborted.Load() {
		return 0, errs.E("backup/archive.Write", errs.Conflict, "BACKUP_ABORTED", "The backup was abandoned")
	}
	n := 0
	for len(p) > 0 {
		if len(c.buf) == cap(c.buf) {
			if err := c.seal(false); err != nil {
				return n, err
			}
		}
		k := copy(c.buf[len(c.buf):cap(c.buf)], p)
		c.buf = c.buf[:len(c.buf)+k]
		p = p[k:]
		n += k
	}
	return n, nil
}

func (c *chunkWriter) seal(final bool) error {
	if c.err != nil {
		return c.err
	}
	c.nonce = chunkNonce(c.nonce, c.index)
	c.aad = chunkAAD(c.aad, c.digest, c.index, final)
	frame := uint32(len(c.buf) + tagLen)
	if final {
		frame |= frameFinal
	}
	c.out = binary.BigEndian.AppendUint32(c.out[:0], frame)
	c.out = c.gcm.Seal(c.out, c.nonce, c.buf, c.aad)
	if _, err := c.dst.Write(c.out); err != nil {
		c.err = err
		return err
	}
	c.index++
	c.buf = c.buf[:0]
	return nil
}

func (c *chunkWriter) close(op string) error {
	if err := c.seal(true); err != nil {
		return writeError(op, err)
	}
	return nil
}

// failure reports the destination's error when that is what failed.
func (c *chunkWriter) failure(op string, err error) error {
	if c.err != nil {
		return writeError(op, c.err)
	}
	if errs.As(err) != nil {
		return err
	}
	return errs.Internalf(op, err)
}
