// Package archive is the sealed format of a deployment backup: a small
// plain header naming the wrapped backup key, then the deployment's content
// as typed records, compressed with zstd and sealed in chunks with
// AES-256-GCM under a data encryption key made for that one backup.
//
// On the volume:
//
//	"KLBACKUP"        magic
//	version           uint16 BE (1)
//	header length     uint32 BE
//	header            backup id, created time, chunk size, key CRN, key
//	                  version, wrapped DEK (no secrets: the DEK is wrapped
//	                  by the customer's root key)
//	chunk*            frame uint32 BE (bit 31: final chunk; the rest: sealed
//	                  length) then ciphertext || tag
//
// Chunk i is sealed with nonce = 0^32 || i (64-bit BE) under the backup's
// own DEK, so no nonce repeats under a key; its additional data is a label,
// the backup's identity (the SHA-256 of the format version, backup id,
// created time and chunk size), i and the final flag. A changed byte
// anywhere, a chunk moved, dropped, repeated or taken from another backup,
// a missing final chunk, or bytes after it all fail before the reader hands
// out a record past the damage, and the end of the records is reported only
// after the final chunk authenticated.
//
// The wrapping (key CRN, version, wrapped DEK) is outside the identity on
// purpose: when the customer rotates the root key, Rewrap replaces it
// without touching the chunks. It needs no binding of its own: a changed
// wrapping either fails to unwrap or unwraps to another key, under which
// no chunk opens.
package archive

import (
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/keyline/keyline/internal/errs"
)

const (
	magic = "KLBACKUP"
	// FormatVersion is the version this package writes and reads.
	FormatVersion = 1

	// DefaultChunkSize is the plaintext size of a sealed chunk.
	DefaultChunkSize = 1 << 20
	minChunkSize     = 4 << 10
	maxChunkSize     = 16 << 20

	prefixLen    = len(magic) + 2 + 4
	maxHeaderLen = 16 << 10
	maxIDLen     = 64
	maxCRNLen    = 2048
	maxVerLen    = 255
	maxWrapLen   = 8192

	frameFinal = 1 << 31
	tagLen     = 16
	aadLabel   = "keyline/backup/v1\x00"
)

// Header is the plain part of a backup: enough to find the key that
// unwraps its DEK, and nothing secret.
type Header struct {
	Version    int
	BackupID   string
	Created    time.Time
	ChunkSize  int
	WrappedDEK WrappedDEK
}

// WrappedDEK is a backup's data encryption key as the customer's root key
// wrapped it.
type WrappedDEK struct {
	KeyCRN     string // the root key (a Key Protect key CRN)
	KeyVersion string // the root key version that wrapped it
	Ciphertext []byte
}

// encodeHeader returns the header's bytes and the backup's identity, the
// digest every chunk's additional data holds.
func encodeHeader(h Header) ([]byte, []byte) {
	body := make([]byte, 0, 64+len(h.BackupID)+len(h.WrappedDEK.KeyCRN)+len(h.WrappedDEK.Ciphertext))
	body = append(body, byte(len(h.BackupID)))
	body = append(body, h.BackupID...)
	body = binary.BigEndian.AppendUint64(body, uint64(h.Created.UnixNano()))
	body = binary.BigEndian.AppendUint32(body, uint32(h.ChunkSize))
	identity := identityDigest(body)
	body = binary.BigEndian.AppendUint16(body, uint16(len(h.WrappedDEK.KeyCRN)))
	body = append(body, h.WrappedDEK.KeyCRN...)
	body = append(body, byte(len(h.WrappedDEK.KeyVersion)))
	body = append(body, h.WrappedDEK.KeyVersion...)
	body = binary.BigEndian.AppendUint16(body, uint16(len(h.WrappedDEK.Ciphertext)))
	body = append(body, h.WrappedDEK.Ciphertext...)

	b := make([]byte, 0, prefixLen+len(body))
	b = append(b, magic...)
	b = binary.BigEndian.AppendUint16(b, FormatVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...), identity
}

// identityDigest hashes the format and the identity fields of a header
// body (backup id, created time, chunk size).
func identityDigest(fields []byte) []byte {
	h := sha256.New()
	h.Write([]byte(magic))
	h.Write(binary.BigEndian.AppendUint16(nil, FormatVersion))
	h.Write(fields)
	return h.Sum(nil)
}

func checkHeader(op string, h Header) error {
	if err := checkLayout(op, h.BackupID, h.ChunkSize); err != nil {
		return err
	}
	if w := h.WrappedDEK; w.KeyCRN == "" || len(w.KeyCRN) > maxCRNLen || len(w.KeyVersion) > maxVerLen ||
		len(w.Ciphertext) == 0 || len(w.Ciphertext) > maxWrapLen {
		return errs.E(op, errs.Invalid, "WRAPPED_DEK_INVALID", "The wrapped backup key is missing or too large")
	}
	return nil
}

func checkLayout(op, backupID string, chunkSize int) error {
	switch {
	case backupID == "" || len(backupID) > maxIDLen:
		return errs.E(op, errs.Invalid, "BACKUP_ID_INVALID", "The backup id must be 1 to 64 bytes").On("field", "backup_id")
	case chunkSize < minChunkSize || chunkSize > maxChunkSize:
		return errs.E(op, errs.Invalid, "CHUNK_SIZE_INVALID", "The chunk size must be 4 KiB to 16 MiB").On("field", "chunk_size")
	}
	return nil
}

// decodeHeader parses the header body and returns the backup's identity;
// ok is false for anything malformed.
func decodeHeader(body []byte) (h Header, identity []byte, ok bool) {
	d := decoder{b: body}
	id := d.bytes(int(d.u8()))
	nanos := d.u64()
	chunk := d.u32()
	identityLen := len(body) - len(d.b)
	crn := d.bytes(int(d.u16()))
	ver := d.bytes(int(d.u8()))
	wrapped := d.bytes(int(d.u16()))
	if d.bad || len(d.b) != 0 {
		return Header{}, nil, false
	}
	h = Header{
		Version:   FormatVersion,
		BackupID:  string(id),
		Created:   time.Unix(0, int64(nanos)).UTC(),
		ChunkSize: int(chunk),
		WrappedDEK: WrappedDEK{
			KeyCRN:     string(crn),
			KeyVersion: string(ver),
			Ciphertext: append([]byte(nil), wrapped...),
		},
	}
	if checkHeader("", h) != nil {
		return Header{}, nil, false
	}
	return h, identityDigest(body[:identityLen]), true
}

// decoder reads fixed fields from a byte slice; bad sticks once a read
// runs past the end.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) take(n int) []byte {
	if d.bad || n < 0 || n > len(d.b) {
		d.bad = true
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n int) []byte { return d.take(n) }

func (d *decoder) u8() uint8 {
	if b := d.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if b := d.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if b := d.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if b := d.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// chunkNonce and chunkAAD bind a chunk to its place in its backup.
func chunkNonce(dst []byte, index uint64) []byte {
	dst = append(dst[:0], 0, 0, 0, 0)
	return binary.BigEndian.AppendUint64(dst, index)
}

func chunkAAD(dst []byte, identity []byte, index uint64, final bool) []byte {
	dst = append(dst[:0], aadLabel...)
	dst = append(dst, identity...)
	dst = binary.BigEndian.AppendUint64(dst, index)
	if final {
		return append(dst, 1)
	}
	return append(dst, 0)
}

// Errors a reader reports. Their messages say what happened to the backup
// and never quote its content.
func errTruncated(op string) error {
	return errs.E(op, errs.Unprocessable, "BACKUP_TRUNCATED", "The backup is truncated")
}

func errModified(op string) error {
	return errs.E(op, errs.Unprocessable, "BACKUP_MODIFIED", "The backup was modified")
}

func errNotBackup(op string) error {
	return errs.E(op, errs.Unprocessable, "BACKUP_INVALID", "The file is not a Keyline backup, or its header is damaged")
}

func errMalformed(op, why string) error {
	return errs.E(op, errs.Unprocessable, "BACKUP_MALFORMED", "The backup's content is malformed: "+why)
}
