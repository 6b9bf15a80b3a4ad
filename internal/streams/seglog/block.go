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
//	3   flags           bit 0: sealed
//	4   body length     uint32 LE
//	8   key ID length   uint8
//	9   key ID          the ID of the DEK that sealed the block ("" when unsealed)
//	9+k header CRC32C   over bytes 0..9+k, so a torn or garbled header is told from a body
//	13+k body           sealed: nonce(12) | ciphertext | tag(16); unsealed: plain | CRC32C(4)
//
// The header is plain but authenticated: it is part of the additional data,
// with the block's identity (store, stream, segment base, position), so a
// block moved, swapped or relabelled fails to open.
//
// Nonces are 96 random bits from crypto/rand per block. Under one DEK the
// chance of any repeat stays below 2^-32 up to 2^32 blocks (NIST SP 800-38D
// 8.3); a deployment re-keys (ReencryptTo) long before that. Nonces are never
// derived from positions: after a torn tail is cut, the same position is
// written again with other data.
const (
	blockVersion = 1
	flagSealed   = 1
	headerFixed  = 9
	crcLen       = 4
	nonceLen     = 12
	tagLen       = 16
	maxKeyIDLen  = 255
	maxBodyLen   = 1 << 30
	aadLabel     = "keyline/seglog/v1"
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
	if b[0] != 'K' || b[1] != 'L' || b[2] != blockVersion || b[3]&^flagSealed != 0 {
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
		keyID:   string(b[headerFixed : headerFixed+k]),
		bodyLen: int(binary.LittleEndian.Uint32(b[4:8])),
		size:    n,
	}
	minBody := crcLen
	if h.sealed {
		minBody = nonceLen + tagLen
	}
	if h.bodyLen > maxBodyLen || h.bodyLen < minBody || h.sealed != (k > 0) {
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
}

func newKeyring(storeID string, unsealed bool, keys []*DEK) (*keyring, error) {
	kr := &keyring{storeID: storeID, unsealed: unsealed, aeads: map[string]cipher.AEAD{}}
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
	n := &keyring{storeID: kr.storeID, unsealed: kr.unsealed, current: dek.ID, aeads: map[string]cipher.AEAD{}}
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
		aeads: map[string]cipher.AEAD{kr.current: kr.aeads[kr.current]}}
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
	return headerFixed + len(kr.current) + crcLen + nonceLen + plainLen + tagLen
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

// seal appends to dst the block holding the concatenation of parts. The
// parts are copied once into dst and encrypted in place.
func (kr *keyring) seal(dst []byte, id blockID, parts ...[]byte) []byte {
	plainLen := 0
	for _, p := range parts {
		plainLen += len(p)
	}
	keyID := kr.current
	flags := byte(flagSealed)
	bodyLen := nonceLen + plainLen + tagLen
	if kr.unsealed {
		keyID, flags, bodyLen = "", 0, plainLen+crcLen
	}
	dst = slices.Grow(dst, kr.blockSize(plainLen))
	start := len(dst)
	dst = append(dst, 'K', 'L', blockVersion, flags)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(bodyLen))
	dst = append(dst, byte(len(keyID)))
	dst = append(dst, keyID...)
	dst = binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli))
	var aadBuf [256]byte
	aad := kr.aad(aadBuf[:0], id, dst[start:])
	if kr.unsealed {
		plainStart := len(dst)
		for _, p := range parts {
			dst = append(dst, p...)
		}
		crc := crc32.Update(crc32.Checksum(aad, castagnoli), castagnoli, dst[plainStart:])
		return binary.LittleEndian.AppendUint32(dst, crc)
	}
	nonceAt := len(dst)
	dst = dst[:nonceAt+nonceLen]
	if _, err := rand.Read(dst[nonceAt:]); err != nil {
		panic("seglog: crypto/rand failed: " + err.Error()) // crypto/rand never fails on supported platforms
	}
	plainStart := len(dst)
	for _, p := range parts {
		dst = append(dst, p...)
	}
	return kr.aeads[keyID].Seal(dst[:plainStart], dst[nonceAt:plainStart], dst[plainStart:], aad)
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
	ct := body[nonceLen:]
	plain, err := aead.Open(ct[:0], body[:nonceLen], ct, aad)
	if err != nil {
		return nil, errAuth
	}
	return plain, nil
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
// each block's position, key ID and plain bytes (aliasing b). It returns the
// end of the last good block. A damaged block with no well-formed block
// after it is a torn tail: scanBlocks stops there without error and the
// caller decides whether a tail may be cut. A damaged block followed by a
// well-formed one, or a block sealed by a key not in the ring, is an error.
func scanBlocks(b []byte, kr *keyring, id blockID, visit func(pos int64, keyID string, plain []byte) error) (int64, error) {
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
		if err := visit(int64(pos), h.keyID, plain); err != nil {
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
