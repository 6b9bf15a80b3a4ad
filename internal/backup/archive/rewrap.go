package archive

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"io"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
)

// Rewrap copies the backup in src to dst with its DEK unwrapped by from
// and wrapped again by to: after the customer rotates the root key (to is
// then the same key at its new version) or moves backups to another key.
// The chunks are copied as they are, so the backup's content and identity
// do not change; each one is authenticated on the way, so a damaged backup
// never gets a fresh wrapping. On error dst holds a partial copy the
// caller discards (volume.Abort).
func Rewrap(ctx context.Context, src io.Reader, dst io.Writer, from, to KeyWrapper) (Header, error) {
	const op = "backup/archive.Rewrap"
	h, identity, err := readHeader(op, src)
	if err != nil {
		return Header{}, err
	}
	dek, err := from.UnwrapDEK(ctx, h.WrappedDEK)
	if err != nil {
		return Header{}, err
	}
	defer seal.Wipe(dek)
	if len(dek) != seal.KeySize {
		return Header{}, errs.E(op, errs.Unprocessable, "BACKUP_MODIFIED", "The backup's key does not unwrap to an AES-256 key")
	}
	block, err := aes.NewCipher(dek)
	if err != nil {
		return Header{}, errs.Internalf(op, err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return Header{}, errs.Internalf(op, err)
	}
	if h.WrappedDEK, err = to.WrapDEK(ctx, dek); err != nil {
		return Header{}, err
	}
	if err := checkHeader(op, h); err != nil {
		return Header{}, err
	}
	hb, newIdentity := encodeHeader(h)
	if !bytes.Equal(identity, newIdentity) {
		return Header{}, errs.E(op, errs.Internal, "BACKUP_IDENTITY_CHANGED", "Rewrapping changed the backup's identity")
	}
	if _, err := dst.Write(hb); err != nil {
		return Header{}, writeError(op, err)
	}
	var frame [4]byte
	sealed := make([]byte, 0, sealedBound(h.ChunkSize))
	plain := make([]byte, 0, sealedBound(h.ChunkSize))
	for index := uint64(0); ; index++ {
		if err := ctx.Err(); err != nil {
			return Header{}, errs.E(op, errs.Unavailable, "CANCELED", "Rewrapping was canceled").Because(err)
		}
		var final bool
		final, sealed, err = readSealedChunk(op, src, frame[:], h.ChunkSize, sealed)
		if err != nil {
			return Header{}, err
		}
		if _, err := openChunk(gcm, identity, index, final, sealed, plain[:0]); err != nil {
			return Header{}, errModified(op)
		}
		if _, err := dst.Write(frame[:]); err != nil {
			return Header{}, writeError(op, err)
		}
		if _, err := dst.Write(sealed); err != nil {
			return Header{}, writeError(op, err)
		}
		if final {
			return h, nil
		}
	}
}
