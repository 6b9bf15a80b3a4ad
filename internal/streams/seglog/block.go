package seglog

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"slices"
	"sort"
)

// A block is the unit of everything this package writes: a batch in a
// segment, a segment's index, a metadata record, a key verifier. On disk:
//
//	0   "KL"            magic
//	2   version         1
//	3   flags           bit 0: sealed; bit 1: chunked (sealed only)
//	4   body length     uint32 LE
//	8   key ID length   uint8
//	9   key ID          the ID of the DEK that sealed the block ("" when unsealed)
//	9+k header CRC32C   over bytes 0..9+k, so a torn or garbled header is told from a body
//	13+k body           sealed: nonce(12) | ciphertext | tag(16); unsealed: plain | CRC32C(4)
//	                    chunked: shift(1) | chunk 0 | chunk 1 | ..., each chunk nonce(12) | ciphertext | tag(16)
//
// The header is plain but authenticated: it is part of the additional data,
// with the block's identity (store, stream, segment base, position), so a
// block moved, swapped or relabelled fails to open.
//
// A sealed block of more than one chunk (64 KiB) of plain bytes is chunked:
// each chunk is an AES-256-GCM message of its own, holding 1<<shift plain
// bytes but the last, so that a large batch can be written, and its
// writeback to disk begin, while the rest of it is still being sealed,
// rather than sealing sitting whole on the path from a produce request to
// its acknowledgement. A chunk's additional data is the block's followed
// by shift and the chunk's index; since the header (with the body length,
// so the number of chunks) is in every chunk's, chunks cannot be dropped,
// reordered, resized or moved between blocks. Blocks written before
// chunking, or under one chunk, are unchunked and open as before.
//
// Nonces are 96 random bits from crypto/rand per GCM message (block or
// chunk). Under one DEK the chance of any repeat stays below 2^-32 up to
// 2^32 messages (NIST SP 800-38D 8.3), 256 TiB of 64 KiB chunks; a
// deployment re-keys (ReencryptTo) long before that. Nonces are never
// derived from positions: after a torn tail is cut, the same position is
// written again with other data.
const (
	blockVersion = 1
	flagSealed   = 1
	flagChunked  = 2
	headerFixed  = 9
	crcLen       = 4
	nonceLen     = 12
	tagLen       = 16
	maxKeyIDLen  = 255
	maxBodyLen   = 1 << 30
	aadLabel     = "keyline/seglog/v1"

	chunkOverhead     = nonceLen + tagLen
	defaultChunkShift = 16 // 64 KiB chunks
	minChunkShift     = 6  // accepted on disk; tests write small chunks
	maxChunkShift     = 24
	// emitEvery is how many plain bytes of a chunked block sealEmit seals
	// between handing out what it has sealed.
	emitEvery = 256 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// streamKind says which kind of file a block lives in; it is part of the
// block's identity.
type streamKind byte

const (
	kindData  streamKind = 'd'
	kindIndex streamKind = 'i'
	kindMeta  streamKind = 'm'
	kindCheck streamKind = 'k'
)

// blockID is where a block belongs. It goes into the block's additional data.
type blockID struct {
	kind   streamKind
	stream string // partition name; "" for store-wide files
	base   int64  // segment base offset or journal generation
	pos    int64  // byte position of the block in its file
}

type header struct {
	sealed  bool
	chunked bool
	keyID   string
	bodyLen int
	size    int // header bytes including the CRC
}

func (h header) blockLen() int { return h.size + h.bodyLen }

// Reasons a block does not open. They stay inside the package: callers get
// errs values that say what happened without any data.
var (
	errShort      = errors.New("block extends past the end of the file")
	errHeader     = errors.New("block header is damaged")
	errAuth       = errors.New("block failed authentication")
	errUnknownKey = errors.New("block is sealed by a key that was not supplied")
	errMode       = errors.New("block sealing mode does not match the store")
)

// parseHeader reads the header at the start of b.
func parseHeader(b []byte) (header, error) {
	if len(b) < headerFixed {
		return header{}, errShort
	}
	if b[0] != 'K' || b[1] != 'L' || b[2] != blockVersion || b[3]&^(flagSealed|flagChunked) != 0 {
		return header{}, errHeader
	}
	k := int(b[8])
	n := headerFixed + k + crcLen
	if len(b) < n {
		return header{}, errShort
	}
	if crc32.Checksum(b[:headerFixed+k], castagnoli) != binary.LittleEndian.Uint32(b[headerFixed+k:n]) {
		return header{}, errHeader
	}
	h := header{
		sealed:  b[3]&flagSealed != 0,
		chunked: b[3]&flagChunked != 0,
		keyID:   string(b[headerFixed : headerFixed+k]),
		bodyLen: int(binary.LittleEndian.Uint32(b[4:8])),
		size:    n,
	}
	minBody := crcLen
	if h.sealed {
		minBody = nonceLen + tagLen
	}
	if h.chunked {
		minBody = 1 + chunkOverhead + 1
	}
	if h.bodyLen > maxBodyLen || h.bodyLen < minBody || h.sealed != (k > 0) || (h.chunked && !h.sealed) {
		return header{}, errHeader
	}
	return h, nil
}

// keyring holds one AEAD per DEK (key setup happens once, not per block)
// and the ID of the DEK that seals new blocks. It is immutable: a change of
// keys builds a new keyring.
type keyring struct {
	storeID  string
	unsealed bool
	current  string
	aeads    map[string]cipher.AEAD
	shift    uint8 // new blocks of more than 1<<shift plain bytes are chunked
}

func newKeyring(storeID string, unsealed bool, keys []*DEK) (*keyring, error) {
	kr := &keyring{storeID: storeID, unsealed: unsealed, aeads: map[string]cipher.AEAD{}, shift: defaultChunkShift}
	if unsealed {
		return kr, nil
	}
	for i, k := range keys {
		if err := kr.add(k); err != nil {
			return nil, err
		}
		if i == 0 {
			kr.current = k.ID
		}
	}
	return kr, nil
}

var errBadDEK = errors.New("DEK needs an ID of 1 to 255 bytes and a 32-byte key")

func (kr *keyring) add(k *DEK) error {
	if k == nil || len(k.ID) == 0 || len(k.ID) > maxKeyIDLen || len(k.Key) != 32 {
		return errBadDEK
	}
	if _, dup := kr.aeads[k.ID]; dup {
		return errBadDEK
	}
	c, err := aes.NewCipher(k.Key)
	if err != nil {
		return err
	}
	g, err := cipher.NewGCM(c)
	if err != nil {
		return err
	}
	kr.aeads[k.ID] = g
	return nil
}

// with returns a keyring that seals with dek and still opens with the rest.
func (kr *keyring) with(dek *DEK) (*keyring, error) {
	n := &keyring{storeID: kr.storeID, unsealed: kr.unsealed, current: dek.ID, aeads: map[string]cipher.AEAD{}, shift: kr.shift}
	for id, a := range kr.aeads {
		if id != dek.ID {
			n.aeads[id] = a
		}
	}
	if err := n.add(dek); err != nil {
		return nil, err
	}
	return n, nil
}

// only returns a keyring with just the current key.
func (kr *keyring) only() *keyring {
	return &keyring{storeID: kr.storeID, unsealed: kr.unsealed, current: kr.current,
		aeads: map[string]cipher.AEAD{kr.current: kr.aeads[kr.current]}, shift: kr.shift}
}

func (kr *keyring) ids() []string {
	ids := make([]string, 0, len(kr.aeads))
	for id := range kr.aeads {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// blockSize is the on-disk size of a block holding plainLen bytes.
func (kr *keyring) blockSize(plainLen int) int {
	if kr.unsealed {
		return headerFixed + crcLen + plainLen + crcLen
	}
	hdr := headerFixed + len(kr.current) + crcLen
	if n := kr.chunks(plainLen); n > 0 {
		return hdr + 1 + n*chunkOverhead + plainLen
	}
	return hdr + nonceLen + plainLen + tagLen
}

// large reports whether a new block of plainLen bytes is over one chunk:
// then sealEmit hands it out in pieces, and seals it (if sealed) in
// chunks. A keyring without a shift makes no block large.
func (kr *keyring) large(plainLen int) bool { return kr.shift != 0 && plainLen > 1<<kr.shift }

// chunks is the number of chunks a new sealed block of plainLen bytes is
// cut into, 0 when it is not chunked.
func (kr *keyring) chunks(plainLen int) int {
	if kr.unsealed || !kr.large(plainLen) {
		return 0
	}
	cs := 1 << kr.shift
	return (plainLen + cs - 1) / cs
}

// chunkLayout reads the layout of a chunked body: its chunk size, number
// of chunks and plain bytes. Every chunk holds at least one plain byte.
func chunkLayout(body []byte) (cs, n, plainLen int, ok bool) {
	if len(body) < 1 || body[0] < minChunkShift || body[0] > maxChunkShift {
		return 0, 0, 0, false
	}
	cs = 1 << body[0]
	rest := len(body) - 1
	n = (rest + cs + chunkOverhead - 1) / (cs + chunkOverhead)
	if n == 0 || rest-(n-1)*(cs+chunkOverhead) <= chunkOverhead {
		return 0, 0, 0, false
	}
	return cs, n, rest - n*chunkOverhead, true
}

func (kr *keyring) aad(buf []byte, id blockID, hdr []byte) []byte {
	buf = append(buf, aadLabel...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(kr.storeID)))
	buf = append(buf, kr.storeID...)
	buf = append(buf, byte(id.kind))
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(id.stream)))
	buf = append(buf, id.stream...)
	buf = binary.BigEndian.AppendUint64(buf, uint64(id.base))
	buf = binary.BigEndian.AppendUint64(buf, uint64(id.pos))
	return append(buf, hdr...)
}

// chunkAAD is a chunk's additional data: the block's, then the chunk size
// and the chunk's index. It returns a buffer of its own, and setIndex
// changes the index in it.
func chunkAAD(blockAAD []byte, shift byte) []byte {
	a := make([]byte, 0, len(blockAAD)+5)
	a = append(a, blockAAD...)
	return append(a, shift, 0, 0, 0, 0)
}

func setIndex(aad []byte, i int) { binary.BigEndian.PutUint32(aad[len(aad)-4:], uint32(i)) }

// appendHeader appends a block header.
func appendHeader(dst []byte, flags byte, bodyLen int, keyID string) []byte {
	start := len(dst)
	dst = append(dst, 'K', 'L', blockVersion, flags)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(bodyLen))
	dst = append(dst, byte(len(keyID)))
	dst = append(dst, keyID...)
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
}

func randomNonce(b []byte) {
	if _, err := rand.Read(b); err != nil {
		panic("seglog: crypto/rand failed: " + err.Error()) // crypto/rand never fails on supported platforms
	}
}

// seal appends to dst the block holding the concatenation of parts. The
// parts are copied once into dst and encrypted in place, or (chunks of a
// large block) encrypted straight from them; they must not overlap dst.
func (kr *keyring) seal(dst []byte, id blockID, parts ...[]byte) []byte {
	dst, _ = kr.sealEmit(dst, id, nil, parts...)
	return dst
}

// sealEmit is seal handing the block out as it goes: when emit is not nil,
// a chunked block calls it with the block's bytes sealed so far (from its
// start; each call a longer prefix, the last the whole block) every
// emitEvery plain bytes, and stops at its first error. An unchunked block
// calls it once.
func (kr *keyring) sealEmit(dst []byte, id blockID, emit func(block []byte) error, parts ...[]byte) ([]byte, error) {
	plainLen := 0
	for _, p := range parts {
		plainLen += len(p)
	}
	dst = slices.Grow(dst, kr.blockSize(plainLen))
	start := len(dst)
	var aadBuf [256]byte
	switch {
	case kr.unsealed:
		// Handed out every emitEvery bytes too, as a chunked block is, so
		// that benchmarks compare like with like.
		dst = appendHeader(dst, 0, plainLen+crcLen, "")
		crc := crc32.Checksum(kr.aad(aadBuf[:0], id, dst[start:]), castagnoli)
		plainStart := len(dst)
		dst = dst[:plainStart+plainLen]
		for at := 0; at < plainLen; at += emitEvery {
			piece := dst[plainStart+at : plainStart+min(plainLen, at+emitEvery)]
			copyRange(piece, parts, at)
			crc = crc32.Update(crc, castagnoli, piece)
			if emit != nil && at+len(piece) < plainLen && kr.large(plainLen) {
				if err := emit(dst[start : plainStart+at+len(piece)]); err != nil {
					return dst, err
				}
			}
		}
		return emitAll(binary.LittleEndian.AppendUint32(dst, crc), start, emit)
	case kr.chunks(plainLen) > 0:
		return kr.sealChunked(dst, start, id, plainLen, parts, emit)
	}
	dst = appendHeader(dst, flagSealed, nonceLen+plainLen+tagLen, kr.current)
	aad := kr.aad(aadBuf[:0], id, dst[start:])
	nonceAt := len(dst)
	dst = dst[:nonceAt+nonceLen]
	randomNonce(dst[nonceAt:])
	plainStart := len(dst)
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return emitAll(kr.aeads[kr.current].Seal(dst[:plainStart], dst[nonceAt:plainStart], dst[plainStart:], aad), start, emit)
}

func emitAll(dst []byte, start int, emit func([]byte) error) ([]byte, error) {
	if emit == nil {
		return dst, nil
	}
	return dst, emit(dst[start:])
}

// sealChunked is sealEmit for a chunked block, which starts at dst[start:].
func (kr *keyring) sealChunked(dst []byte, start int, id blockID, plainLen int, parts [][]byte, emit func([]byte) error) ([]byte, error) {
	n, cs := kr.chunks(plainLen), 1<<kr.shift
	dst = appendHeader(dst, flagSealed|flagChunked, 1+n*chunkOverhead+plainLen, kr.current)
	var aadBuf [256]byte
	blockAAD := kr.aad(aadBuf[:0], id, dst[start:])
	bodyAt := len(dst)
	dst = dst[:bodyAt+1+n*chunkOverhead+plainLen]
	body := dst[bodyAt:]
	body[0] = kr.shift
	aead := kr.aeads[kr.current]
	aad := chunkAAD(blockAAD, kr.shift)
	for i := range n {
		at := 1 + i*(cs+chunkOverhead)
		c := body[at:]
		pl := min(cs, plainLen-i*cs)
		randomNonce(c[:nonceLen])
		// A chunk inside one part (all but the first of a batch) seals
		// straight from it, saving a pass over the data; others are
		// gathered into place and sealed there.
		plain, whole := within(parts, i*cs, pl)
		if !whole {
			plain = c[nonceLen : nonceLen+pl]
			copyRange(plain, parts, i*cs)
		}
		setIndex(aad, i)
		aead.Seal(c[nonceLen:nonceLen], c[:nonceLen], plain, aad)
		if emit != nil && (i == n-1 || (i+1)*cs%emitEvery == 0) {
			if err := emit(dst[start : bodyAt+at+nonceLen+pl+tagLen]); err != nil {
				return dst, err
			}
		}
	}
	return dst, nil
}

// within returns the n bytes at offset at of the concatenation of parts
// when they lie in one part.
func within(parts [][]byte, at, n int) ([]byte, bool) {
	for _, p := range parts {
		if at < len(p) {
			if at+n <= len(p) {
				return p[at : at+n], true
			}
			return nil, false
		}
		at -= len(p)
	}
	return nil, false
}

// copyRange fills dst from the concatenation of parts, from offset at.
func copyRange(dst []byte, parts [][]byte, at int) {
	for _, p := range parts {
		if at >= len(p) {
			at -= len(p)
			continue
		}
		n := copy(dst, p[at:])
		dst, at = dst[n:], 0
		if len(dst) == 0 {
			return
		}
	}
}

// open authenticates and decrypts the block b (exactly one block, header
// parsed as h) in place and returns its plain bytes, which alias b.
func (kr *keyring) open(b []byte, h header, id blockID) ([]byte, error) {
	if h.sealed == kr.unsealed {
		return nil, errMode
	}
	var aadBuf [256]byte
	aad := kr.aad(aadBuf[:0], id, b[:h.size])
	body := b[h.size:h.blockLen()]
	if !h.sealed {
		plain := body[:len(body)-crcLen]
		crc := crc32.Update(crc32.Checksum(aad, castagnoli), castagnoli, plain)
		if crc != binary.LittleEndian.Uint32(body[len(plain):]) {
			return nil, errAuth
		}
		return plain, nil
	}
	aead, ok := kr.aeads[h.keyID]
	if !ok {
		return nil, errUnknownKey
	}
	if h.chunked {
		cs, n, plainLen, ok := chunkLayout(body)
		if !ok {
			return nil, errAuth
		}
		// Each chunk opens where it lies; then the plain runs move down
		// to the start of the body, first to last, each below the next.
		err := openChunks(aead, aad, body, cs, n, plainLen, func(_ int, ct []byte) []byte { return ct[:0] })
		if err != nil {
			return nil, err
		}
		for i := range n {
			at := 1 + i*(cs+chunkOverhead) + nonceLen
			copy(body[i*cs:], body[at:at+min(cs, plainLen-i*cs)])
		}
		return body[:plainLen], nil
	}
	ct := body[nonceLen:]
	plain, err := aead.Open(ct[:0], body[:nonceLen], ct, aad)
	if err != nil {
		return nil, errAuth
	}
	return plain, nil
}

// openChunks opens the n chunks of a chunked body, chunk i into out(i, its
// ciphertext and tag).
func openChunks(aead cipher.AEAD, blockAAD, body []byte, cs, n, plainLen int, out func(i int, ct []byte) []byte) error {
	aad := chunkAAD(blockAAD, body[0])
	for i := range n {
		c := body[1+i*(cs+chunkOverhead):]
		ct := c[nonceLen : nonceLen+min(cs, plainLen-i*cs)+tagLen]
		setIndex(aad, i)
		if _, err := aead.Open(out(i, ct), c[:nonceLen], ct, aad); err != nil {
			return errAuth
		}
	}
	return nil
}

// openTo is open writing the plain bytes into dst's spare capacity rather
// than over b; it returns them (dst grown). dst's capacity must not overlap
// b.
func (kr *keyring) openTo(dst, b []byte, h header, id blockID) ([]byte, error) {
	if h.sealed == kr.unsealed {
		return nil, errMode
	}
	if !h.sealed {
		plain, err := kr.open(b, h, id)
		if err != nil {
			return nil, err
		}
		return append(dst, plain...), nil
	}
	var aadBuf [256]byte
	aad := kr.aad(aadBuf[:0], id, b[:h.size])
	body := b[h.size:h.blockLen()]
	aead, ok := kr.aeads[h.keyID]
	if !ok {
		return nil, errUnknownKey
	}
	if h.chunked {
		cs, n, plainLen, ok := chunkLayout(body)
		if !ok {
			return nil, errAuth
		}
		at := len(dst)
		dst = slices.Grow(dst, plainLen)[:at+plainLen]
		err := openChunks(aead, aad, body, cs, n, plainLen, func(i int, _ []byte) []byte { return dst[at+i*cs : at+i*cs] })
		if err != nil {
			return nil, err
		}
		return dst, nil
	}
	plain, err := aead.Open(dst, body[:nonceLen], body[nonceLen:], aad)
	if err != nil {
		return nil, errAuth
	}
	return plain, nil
}

// openCopy is open without touching b (a failed in-place open wipes its
// output).
func (kr *keyring) openCopy(b []byte, h header, id blockID) ([]byte, error) {
	return kr.open(bytes.Clone(b[:h.blockLen()]), h, id)
}

// scanBlocks walks the blocks of a whole file held in b, calling visit with
// each block's position, length, key ID and plain bytes (aliasing b). It returns the
// end of the last good block. A damaged block with no well-formed block
// after it is a torn tail: scanBlocks stops there without error and the
// caller decides whether a tail may be cut. A damaged block followed by a
// well-formed one, or a block sealed by a key not in the ring, is an error.
func scanBlocks(b []byte, kr *keyring, id blockID, visit func(pos int64, blockLen int, keyID string, plain []byte) error) (int64, error) {
	pos := 0
	for pos < len(b) {
		h, err := parseHeader(b[pos:])
		if err == nil && h.blockLen() > len(b)-pos {
			err = errShort
		}
		var plain []byte
		if err == nil {
			id.pos = int64(pos)
			plain, err = kr.open(b[pos:pos+h.blockLen()], h, id)
			if errors.Is(err, errUnknownKey) || errors.Is(err, errMode) {
				return int64(pos), err
			}
		}
		if err != nil {
			if blockAfter(b, pos+1) {
				return int64(pos), err
			}
			return int64(pos), nil
		}
		if err := visit(int64(pos), h.blockLen(), h.keyID, plain); err != nil {
			return int64(pos), err
		}
		pos += h.blockLen()
	}
	return int64(pos), nil
}

// blockAfter reports whether a well-formed block (header intact, length
// inside the file) starts at or after from. Then the damage before it is
// not a torn tail but corruption, or blocks moved in from elsewhere: a crash
// leaves a short or garbled end, never intact blocks after the damage.
func blockAfter(b []byte, from int) bool {
	for from < len(b) {
		i := bytes.Index(b[from:], []byte{'K', 'L', blockVersion})
		if i < 0 {
			return false
		}
		pos := from + i
		if h, err := parseHeader(b[pos:]); err == nil && h.blockLen() <= len(b)-pos {
			return true
		}
		from = pos + 1
	}
	return false
}
