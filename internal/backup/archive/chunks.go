package archive

import (
	"crypto/cipher"
	"encoding/binary"
	"io"
	"slices"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/keyline/keyline/internal/errs"
)

// The record stream is cut into segments of ChunkSize bytes; each segment
// is compressed as its own zstd frame and sealed as one chunk. Segments are
// independent, so several are compressed and sealed (or opened and
// decompressed) at once on different cores, while the chunks stay in order
// on the volume.

// sealedBound is the largest sealed chunk for a segment size: zstd stores
// incompressible blocks raw, with a few bytes per 128 KiB block and a
// frame header.
func sealedBound(size int) int { return size + size>>7 + 1<<10 + tagLen }

// bufPool recycles segment and chunk buffers of one size.
type bufPool struct {
	size int
	pool sync.Pool
}

func newBufPool(size int) *bufPool {
	p := &bufPool{size: size}
	p.pool.New = func() any { b := make([]byte, 0, size); return &b }
	return p
}

func (p *bufPool) get() []byte  { return (*p.pool.Get().(*[]byte))[:0] }
func (p *bufPool) put(b []byte) { p.pool.Put(&b) }

type sealJob struct {
	plain []byte
	out   []byte // frame || sealed chunk
	done  chan struct{}
}

// chunkWriter compresses and seals segments on as many goroutines as the
// encoder allows and writes the chunks in order. A full segment is sealed
// only when more bytes follow it, so the last one is always the one close
// seals with the final flag.
type chunkWriter struct {
	dst      io.Writer
	gcm      cipher.AEAD
	enc      *zstd.Encoder
	identity []byte
	seg      []byte
	index    uint64
	queue    []*sealJob // in flight, oldest first
	inflight int
	plain    *bufPool
	sealed   *bufPool
	err      error // the destination's error, or the abort
}

func newChunkWriter(dst io.Writer, gcm cipher.AEAD, enc *zstd.Encoder, identity []byte, size, concurrency int) *chunkWriter {
	c := &chunkWriter{dst: dst, gcm: gcm, enc: enc, identity: identity, inflight: 2 * concurrency,
		plain: newBufPool(size), sealed: newBufPool(4 + sealedBound(size))}
	c.seg = c.plain.get()
	return c
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n := 0
	for len(p) > 0 {
		if len(c.seg) == cap(c.seg) {
			if err := c.dispatch(false); err != nil {
				return n, err
			}
		}
		k := copy(c.seg[len(c.seg):cap(c.seg)], p)
		c.seg = c.seg[:len(c.seg)+k]
		p = p[k:]
		n += k
	}
	return n, nil
}

// dispatch hands the current segment to a sealing goroutine and writes
// the oldest chunks out while too many are in flight (all of them once
// the final one is sealed).
func (c *chunkWriter) dispatch(final bool) error {
	j := &sealJob{plain: c.seg, out: c.sealed.get(), done: make(chan struct{})}
	go c.seal(j, c.index, final)
	c.index++
	c.seg = c.plain.get()
	c.queue = append(c.queue, j)
	for len(c.queue) > c.inflight || final && len(c.queue) > 0 {
		j := c.queue[0]
		c.queue = c.queue[1:]
		<-j.done
		_, err := c.dst.Write(j.out)
		c.plain.put(j.plain)
		c.sealed.put(j.out)
		if err != nil {
			c.err = err
			c.drain()
			return err
		}
	}
	return nil
}

func (c *chunkWriter) seal(j *sealJob, index uint64, final bool) {
	defer close(j.done)
	buf := append(j.out[:0], 0, 0, 0, 0)
	buf = slices.Grow(c.enc.EncodeAll(j.plain, buf), tagLen)
	nonce := chunkNonce(make([]byte, 0, 12), index)
	aad := chunkAAD(make([]byte, 0, 64), c.identity, index, final)
	// Sealed in place (the capacity holds the tag): the compressed bytes
	// become the ciphertext.
	sealed := c.gcm.Seal(buf[4:4], nonce, buf[4:], aad)
	frame := uint32(len(sealed))
	if final {
		frame |= frameFinal
	}
	binary.BigEndian.PutUint32(buf, frame)
	j.out = buf[:4+len(sealed)]
}

// drain waits for the chunks in flight and drops them.
func (c *chunkWriter) drain() {
	for _, j := range c.queue {
		<-j.done
	}
	c.queue = nil
}

func (c *chunkWriter) close(op string) error {
	if c.err != nil {
		return writeError(op, c.err)
	}
	if err := c.dispatch(true); err != nil {
		return writeError(op, err)
	}
	return nil
}

func (c *chunkWriter) abort() {
	if c.err == nil {
		c.err = errs.E("backup/archive.Abort", errs.Conflict, "BACKUP_ABORTED", "The backup was abandoned")
	}
	c.drain()
}

type openJob struct {
	final  bool
	sealed []byte
	plain  []byte
	err    error
	done   chan struct{}
}

// chunkReader reads chunks in order on one goroutine, opens and
// decompresses them on others, and hands the plaintext out in order. It
// reports io.EOF only after the final chunk, and only when nothing follows
// it.
type chunkReader struct {
	src      io.Reader
	gcm      cipher.AEAD
	dec      *zstd.Decoder
	identity []byte
	size     int // plaintext limit of a chunk
	jobs     chan *openJob
	stop     chan struct{}
	plainP   *bufPool
	sealP    *bufPool
	cur      *openJob
	plain    []byte // unread plaintext of cur
	final    bool
	err      error
}

func newChunkReader(src io.Reader, gcm cipher.AEAD, dec *zstd.Decoder, identity []byte, size, concurrency int) *chunkReader {
	c := &chunkReader{src: src, gcm: gcm, dec: dec, identity: identity, size: size,
		jobs: make(chan *openJob, 2*concurrency), stop: make(chan struct{}),
		plainP: newBufPool(size), sealP: newBufPool(sealedBound(size))}
	go c.prefetch()
	return c
}

// prefetch reads frames and chunks in order and starts opening each one.
// A failure to read is queued in its place, so the consumer meets it
// after every chunk before it.
func (c *chunkReader) prefetch() {
	const op = "backup/archive.Read"
	defer close(c.jobs)
	var frame [4]byte
	for index := uint64(0); ; index++ {
		j := &openJob{done: make(chan struct{})}
		err := c.readChunk(op, j, frame[:])
		if err != nil {
			j.err = err
			close(j.done)
		} else {
			go c.open(j, index)
		}
		select {
		case c.jobs <- j:
		case <-c.stop:
			return
		}
		if err != nil || j.final {
			return
		}
	}
}

func (c *chunkReader) readChunk(op string, j *openJob, frame []byte) error {
	var err error
	j.final, j.sealed, err = readSealedChunk(op, c.src, frame, c.size, c.sealP.get())
	return err
}

// readSealedChunk reads the next frame and sealed chunk into buf; after
// the final chunk it checks that nothing follows.
func readSealedChunk(op string, src io.Reader, frame []byte, size int, buf []byte) (final bool, sealed []byte, err error) {
	if _, err := io.ReadFull(src, frame); err != nil {
		return false, nil, readError(op, err)
	}
	f := binary.BigEndian.Uint32(frame)
	final = f&frameFinal != 0
	n := int(f &^ frameFinal)
	if n <= tagLen || n > sealedBound(size) {
		return false, nil, errModified(op)
	}
	sealed = slices.Grow(buf[:0], n)[:n]
	if _, err := io.ReadFull(src, sealed); err != nil {
		return false, nil, readError(op, err)
	}
	if final {
		var one [1]byte
		if n, err := io.ReadFull(src, one[:]); n > 0 {
			return false, nil, errModified(op) // bytes appended after the final chunk
		} else if err != io.EOF {
			return false, nil, readError(op, err)
		}
	}
	return final, sealed, nil
}

func (c *chunkReader) open(j *openJob, index uint64) {
	const op = "backup/archive.Read"
	defer close(j.done)
	compressed, err := openChunk(c.gcm, c.identity, index, j.final, j.sealed, j.sealed[:0])
	if err != nil {
		j.err = errModified(op)
		return
	}
	// Authenticated: only a broken writer makes a chunk that does not
	// decode or decodes past the segment size (the cap limits it).
	j.plain, err = c.dec.DecodeAll(compressed, c.plainP.get())
	if err != nil || len(j.plain) == 0 {
		j.err = errMalformed(op, "a chunk does not decompress")
	}
}

// openChunk authenticates and decrypts chunk index into dst (which may be
// sealed[:0]).
func openChunk(gcm cipher.AEAD, identity []byte, index uint64, final bool, sealed, dst []byte) ([]byte, error) {
	nonce := chunkNonce(make([]byte, 0, 12), index)
	aad := chunkAAD(make([]byte, 0, 64), identity, index, final)
	return gcm.Open(dst, nonce, sealed, aad)
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.plain) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		if c.final {
			return 0, io.EOF
		}
		c.release()
		j, ok := <-c.jobs
		if !ok {
			c.err = errs.E("backup/archive.Read", errs.Internal, "BACKUP_READER_CLOSED", "The backup reader is closed")
			return 0, c.err
		}
		<-j.done
		c.cur = j
		if j.err != nil {
			c.err = j.err
			return 0, c.err
		}
		c.plain, c.final = j.plain, j.final
	}
	n := copy(p, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

// release returns the current chunk's buffers.
func (c *chunkReader) release() {
	if c.cur != nil {
		if c.cur.sealed != nil {
			c.sealP.put(c.cur.sealed)
		}
		if c.cur.plain != nil {
			c.plainP.put(c.cur.plain)
		}
		c.cur = nil
	}
}

// close stops the prefetching goroutine (once its read returns).
func (c *chunkReader) close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
}
