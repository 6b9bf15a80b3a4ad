package archive

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
)

// Reader streams a backup's records back. Every record it returns comes
// from chunks that authenticated, in order; Next returns io.EOF only once
// the final chunk authenticated and nothing follows it. Until then a
// caller must treat what it restored as provisional: restore into a
// temporary place and commit only on io.EOF (RestoreDir does this).
type Reader struct {
	header   Header
	contents Contents
	chunks   *chunkReader
	dec      recordDecoder
	seq      sequence
	err      error
	done     bool
}

// NewReader reads the header, has keys unwrap the backup's DEK, and reads
// the table of contents. Errors from keys are returned as they are.
func NewReader(ctx context.Context, src io.Reader, keys KeyWrapper) (*Reader, error) {
	const op = "backup/archive.NewReader"
	h, identity, err := readHeader(op, src)
	if err != nil {
		return nil, err
	}
	dek, err := keys.UnwrapDEK(ctx, h.WrappedDEK)
	if err != nil {
		return nil, err
	}
	defer seal.Wipe(dek)
	if len(dek) != seal.KeySize {
		return nil, errs.E(op, errs.Unprocessable, "BACKUP_MODIFIED", "The backup's key does not unwrap to an AES-256 key")
	}
	block, err := aes.NewCipher(dek)
	if err != nil {
		return nil, errs.E(op, errs.Unprocessable, "BACKUP_MODIFIED", "The backup's key does not unwrap to an AES-256 key")
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	concurrency := runtime.GOMAXPROCS(0)
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(concurrency),
		zstd.WithDecoderMaxMemory(uint64(2*h.ChunkSize)),
		zstd.WithDecodeAllCapLimit(true))
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	cr := newChunkReader(src, gcm, dec, identity, h.ChunkSize, concurrency)
	r := &Reader{header: h, chunks: cr, dec: recordDecoder{r: bufio.NewReaderSize(cr, 256<<10)}}
	rec, err := r.dec.next()
	if err == nil && rec.Kind != RecordContents {
		err = errBadRecord
	}
	if err == nil {
		if serr := r.seq.begin(rec.contents); serr != nil {
			err = errMalformed(op, serr.Error())
		}
	}
	if err != nil {
		r.Close()
		return nil, r.failure(op, err)
	}
	r.contents = rec.contents
	return r, nil
}

// readHeader reads the plain header and returns it with the backup's
// identity.
func readHeader(op string, src io.Reader) (Header, []byte, error) {
	prefix := make([]byte, prefixLen)
	if n, err := io.ReadFull(src, prefix); err != nil {
		if n == 0 && err == io.EOF || string(prefix[:min(n, len(magic))]) != magic[:min(n, len(magic))] {
			return Header{}, nil, errNotBackup(op)
		}
		return Header{}, nil, readError(op, err)
	}
	if string(prefix[:len(magic)]) != magic {
		return Header{}, nil, errNotBackup(op)
	}
	if v := binary.BigEndian.Uint16(prefix[len(magic):]); v != FormatVersion {
		return Header{}, nil, errs.Ef(op, errs.Unprocessable, "BACKUP_VERSION_UNSUPPORTED", "The backup has format version %d; this server reads version %d", v, FormatVersion)
	}
	n := binary.BigEndian.Uint32(prefix[len(magic)+2:])
	if n > maxHeaderLen {
		return Header{}, nil, errNotBackup(op)
	}
	hb := make([]byte, prefixLen+int(n))
	copy(hb, prefix)
	if _, err := io.ReadFull(src, hb[prefixLen:]); err != nil {
		return Header{}, nil, readError(op, err)
	}
	h, identity, ok := decodeHeader(hb[prefixLen:])
	if !ok {
		return Header{}, nil, errNotBackup(op)
	}
	return h, identity, nil
}

// readError turns a failed read of the source into an errs value: a short
// read is truncation; a volume's own errs value is kept.
func readError(op string, err error) error {
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return errTruncated(op)
	case errs.As(err) != nil:
		return err
	}
	return errs.E(op, errs.Unavailable, "BACKUP_READ_FAILED", "The backup could not be read from its volume").Because(err)
}

// Header is the backup's plain header.
func (r *Reader) Header() Header { return r.header }

// Contents is the backup's table of contents.
func (r *Reader) Contents() Contents { return r.contents }

// Next returns the next metadata entry, partition or batch. io.EOF means
// the whole backup was read and authenticated; any other error means the
// backup must not be used.
func (r *Reader) Next() (Record, error) {
	const op = "backup/archive.Next"
	if r.err != nil {
		return Record{}, r.err
	}
	if r.done {
		return Record{}, io.EOF
	}
	rec, err := r.dec.next()
	if err != nil {
		return Record{}, r.failure(op, err)
	}
	var serr error
	switch rec.Kind {
	case RecordMeta:
		serr = r.seq.meta()
	case RecordPartition:
		serr = r.seq.partition(rec.Partition)
	case RecordBatch:
		serr = r.seq.batch(rec.Batch)
	case recordEnd:
		if serr = r.seq.end(); serr == nil {
			return Record{}, r.finish(op)
		}
	default:
		serr = errors.New("a second table of contents")
	}
	if serr != nil {
		return Record{}, r.failure(op, errMalformed(op, serr.Error()))
	}
	return rec, nil
}

// finish checks that nothing follows the end record and
// that the final chunk was read with nothing after it.
func (r *Reader) finish(op string) error {
	if _, err := r.dec.r.ReadByte(); err != io.EOF {
		if err == nil {
			err = errMalformed(op, "records follow the end")
		}
		return r.failure(op, err)
	}
	if !r.chunks.final {
		return r.failure(op, errTruncated(op))
	}
	r.done = true
	return io.EOF
}

// failure makes err sticky, preferring what the chunk layer saw: a
// truncation or a forged chunk explains any error above it.
func (r *Reader) failure(op string, err error) error {
	switch {
	case r.chunks.err != nil:
		err = r.chunks.err
	case errs.As(err) != nil:
	case errors.Is(err, errBadRecord):
		err = errMalformed(op, "a record does not parse")
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		err = errMalformed(op, "the records end early")
	default:
		// Only authenticated bytes reach the decompressor, so a decoding
		// error means the writer was broken, not that the file was hit.
		err = errs.E(op, errs.Unprocessable, "BACKUP_MALFORMED", "The backup's content is malformed: the compressed stream does not decode").Because(err)
	}
	r.err = err
	return err
}

// Close stops reading ahead. It does not close the source; close the
// source after the Reader.
func (r *Reader) Close() {
	r.chunks.close()
}
