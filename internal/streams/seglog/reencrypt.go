package seglog

import (
	"context"
	"errors"
	"github.com/keyline/keyline/internal/durable"
	"os"
	"path/filepath"
	"slices"

	"github.com/keyline/keyline/internal/errs"
)

// ReencryptTo makes dek the sealing key at once and then rewrites every
// block sealed by another key (segments, indexes, metadata) while appends
// and reads carry on, calling progress with bytes done and total. It is
// resumable: after a crash or a canceled ctx, Open with both keys (dek
// first) and call it again. When it returns nil, KeyIDsInUse is dek.ID
// alone and the store no longer holds the old keys.
//
// A segment is rewritten whole into a new file and swapped in by rename, so
// each segment on disk is always entirely under one key or the other.
func (s *Store) ReencryptTo(ctx context.Context, dek *DEK, progress func(done, total int64)) error {
	const op = "seglog.ReencryptTo"
	if err := s.usable(op); err != nil {
		return err
	}
	if s.opts.Unsealed {
		return errs.E(op, errs.Conflict, "STORE_UNSEALED", "An unsealed store cannot be re-encrypted")
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	s.reenc.Lock()
	defer s.reenc.Unlock()
	kr, err := s.switchKey(op, dek)
	if err != nil {
		return err
	}
	s.mu.RLock()
	parts := make([]*Partition, 0, len(s.parts))
	for _, p := range s.parts {
		parts = append(parts, p)
	}
	s.mu.RUnlock()

	// New appends already use dek; rolling moves whatever the active
	// segments hold under other keys into sealed segments to rewrite.
	for _, p := range parts {
		if err := p.rollAwayFrom(kr); err != nil {
			return errs.Internalf(op, err)
		}
	}
	if slices.ContainsFunc(s.meta.keyIDs(), func(id string) bool { return id != kr.current }) {
		if err := s.meta.compact(kr); err != nil {
			return errs.Internalf(op, err)
		}
	}

	type job struct {
		p   *Partition
		seg *segment
	}
	var jobs []job
	var total, done int64
	for _, p := range parts {
		p.mu.RLock()
		for _, seg := range p.segs {
			if !seg.onlyKey(kr.current) {
				jobs = append(jobs, job{p, seg})
				total += seg.size
			}
		}
		p.mu.RUnlock()
	}
	progress(0, total)
	for _, j := range jobs {
		if err := ctx.Err(); err != nil {
			return ctxError(op, err)
		}
		size := j.seg.size
		step := func(n int64) { progress(done+n, total) }
		if err := j.p.reencryptSegment(ctx, j.seg, kr, step); err != nil {
			if ctx.Err() != nil {
				return ctxError(op, ctx.Err())
			}
			return dataError(op, err)
		}
		done += size
		progress(done, total)
	}
	for _, id := range s.keyIDs(false) {
		if id != kr.current {
			return errs.E(op, errs.Internal, "REENCRYPT_INCOMPLETE", "Blocks under an old key remain after re-encryption")
		}
	}
	if err := s.usable(op); err != nil {
		return err
	}
	final := kr.only()
	if err := s.writeKeyCheck(final); err != nil {
		return errs.Internalf(op, err)
	}
	s.keys.Store(final)
	return nil
}

func (s *Store) checkIDsCopy() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Clone(s.checkIDs)
}

// switchKey makes dek the sealing key, after recording its verifier. A dek
// whose ID is already known must be the same key.
func (s *Store) switchKey(op string, dek *DEK) (*keyring, error) {
	cur := s.keys.Load()
	if _, known := cur.aeads[dek.ID]; known || slices.Contains(s.checkIDsCopy(), dek.ID) {
		if err := s.checkKnownKey(op, dek); err != nil {
			return nil, err
		}
	}
	kr, err := cur.with(dek)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "DEK_INVALID", "The data encryption key needs an ID of 1 to 255 bytes and 32 bytes of key")
	}
	if err := s.addKeyCheck(kr); err != nil {
		return nil, errs.Internalf(op, err)
	}
	s.keys.Store(kr)
	return kr, nil
}

// checkKnownKey opens dek.ID's verifier with dek.
func (s *Store) checkKnownKey(op string, dek *DEK) error {
	one, err := newKeyring(s.opts.StoreID, false, []*DEK{dek})
	if err != nil {
		return errs.E(op, errs.Invalid, "DEK_INVALID", "The data encryption key needs an ID of 1 to 255 bytes and 32 bytes of key")
	}
	b, err := os.ReadFile(filepath.Join(s.dir, "keys.check"))
	if err != nil {
		return errs.Internalf(op, err)
	}
	for pos := 0; pos < len(b); {
		h, err := parseHeader(b[pos:])
		if err != nil || h.blockLen() > len(b)-pos {
			return errs.E(op, errs.Unprocessable, CodeCorrupt, "The store's key verifier file is damaged")
		}
		if h.keyID == dek.ID {
			if plain, err := one.openCopy(b[pos:], h, blockID{kind: kindCheck, pos: int64(pos)}); err != nil || string(plain) != checkPlain {
				return errs.E(op, errs.Unprocessable, CodeKeyMismatch, "The data encryption key does not match the key with its ID")
			}
		}
		pos += h.blockLen()
	}
	return nil
}

const progressStep = 4 << 20

// rollAwayFrom rolls the active segment if it holds blocks under keys other
// than kr's sealing key.
func (p *Partition) rollAwayFrom(kr *keyring) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.dropped || p.closed || p.active().onlyKey(kr.current) {
		return nil
	}
	return p.rollLocked(kr)
}

// reencryptSegment rewrites a sealed segment and its index under kr's
// sealing key, batches unchanged.
// step is told the bytes of the segment done so far, every progressStep.
func (p *Partition) reencryptSegment(ctx context.Context, seg *segment, kr *keyring, step func(int64)) error {
	_, err := p.rewriteSegment(ctx, seg, kr, step, func(plain []byte, _ bool) ([]byte, error) { return plain, nil })
	return err
}

// rewriteHook, when a test sets it, is called at each stage of a segment's
// swap; an error stops the swap there, leaving the files as a crash would.
var rewriteHook func(stage string) error

// rewriteSegment rewrites a sealed segment and its index under kr's
// sealing key into side files, then swaps them in by rename. keep is given
// each batch's plain block (header and data) and whether it is the
// segment's last, and returns what to seal in its place, or nil to leave it
// out; the segment's last batch may not be left out, so the segment still
// ends where it did. A segment removed meanwhile (retention, drop), or one
// already under kr's key that keep leaves as it is, is left alone and
// rewriteSegment reports false.
func (p *Partition) rewriteSegment(ctx context.Context, seg *segment, kr *keyring, step func(int64), keep func(plain []byte, last bool) ([]byte, error)) (bool, error) {
	p.mu.RLock()
	live := slices.Contains(p.segs, seg) && seg != p.active() && !p.closed
	f, size, next, sealed := seg.f, seg.size, seg.next, seg.onlyKey(kr.current)
	p.mu.RUnlock()
	if !live {
		return false, nil
	}
	// Sealed segments do not change, so they are read without the lock; a
	// concurrent removal closes f and is noticed below.
	b, err := readAll(f, size)
	if errors.Is(err, os.ErrClosed) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	ns := newSegment(seg.base, nil)
	out := make([]byte, 0, len(b)+len(b)/16)
	n := 0
	reported := int64(0)
	end, err := scanBlocks(b, kr, blockID{kind: kindData, stream: p.stream, base: seg.base}, func(at int64, _ int, _ string, plain []byte) error {
		if n++; n%256 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		if at-reported >= progressStep {
			reported = at
			step(at)
		}
		if len(plain) < metaLen {
			return errBatch
		}
		kept, err := keep(plain, decodeMeta(plain).LastOffset()+1 == next)
		if err != nil {
			return err
		}
		if len(kept) == 0 || &kept[0] != &plain[0] {
			sealed = false
		}
		if plain = kept; plain == nil {
			return nil
		}
		pos := int64(len(out))
		out = kr.seal(out, blockID{kind: kindData, stream: p.stream, base: seg.base, pos: pos}, plain)
		ns.add(entry{meta: decodeMeta(plain), pos: pos, len: int32(int64(len(out)) - pos)}, kr.current)
		return nil
	})
	if err != nil {
		return false, err
	}
	if end != size {
		return false, errShort
	}
	if ns.next != next {
		return false, errBatch
	}
	if sealed {
		return false, nil
	}
	ns.size = int64(len(out))
	logPath := filepath.Join(p.dir, segmentName(seg.base))
	idxPath := filepath.Join(p.dir, indexName(seg.base))
	idx := kr.seal(nil, blockID{kind: kindIndex, stream: p.stream, base: seg.base}, encodeIndex(ns))
	if err := writeSynced(logPath+rewriteExt, out); err != nil {
		return false, err
	}
	if err := writeSynced(idxPath+rewriteExt, idx); err != nil {
		return false, err
	}
	if err := hook("written"); err != nil {
		return false, err
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if !slices.Contains(p.segs, seg) || p.closed {
		os.Remove(logPath + rewriteExt)
		os.Remove(idxPath + rewriteExt)
		return false, nil
	}
	// The old index goes first: if we die between the renames, the new
	// segment has no index and is rescanned on open, never paired with the
	// old one.
	if err := os.Remove(idxPath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if err := os.Rename(logPath+rewriteExt, logPath); err != nil {
		return false, err
	}
	if err := hook("renamed"); err != nil {
		return false, err
	}
	if err := os.Rename(idxPath+rewriteExt, idxPath); err != nil {
		return false, err
	}
	if err := durable.SyncDir(p.dir); err != nil {
		return false, err
	}
	nf, err := os.OpenFile(logPath, os.O_RDWR, 0o600)
	if err != nil {
		return false, err
	}
	seg.f.Close()
	seg.f, seg.size, seg.keys, seg.indexKey, seg.maxTs = nf, ns.size, ns.keys, kr.current, ns.maxTs
	seg.cached.Store(nil) // positions changed; reloaded from the new index when needed
	return true, nil
}

func hook(stage string) error {
	if rewriteHook == nil {
		return nil
	}
	return rewriteHook(stage)
}
