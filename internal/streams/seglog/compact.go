package seglog

import (
	"context"
	"crypto/sha256"
	"errors"
	"math"
	"os"
	"time"

	"github.com/keyline/keyline/internal/errs"
)

// Compaction is one pass of the log cleaner over a partition and what it
// must know of the records inside a batch, which the log otherwise treats
// as opaque: the broker supplies Records and Rebuild for Kafka batches.
type Compaction struct {
	Now               time.Time
	MinDirtyRatio     float64 // min.cleanable.dirty.ratio: clean only when dirty bytes / cleanable bytes reach it
	MinLagMs          int64   // min.compaction.lag.ms: segments with a newer batch are not cleaned yet
	DeleteRetentionMs int64   // delete.retention.ms: tombstones at least this old are removed
	// MaxKeys bounds the map of keys to their newest offset (about 100
	// bytes each); when the dirty part holds more, a pass cleans the prefix
	// that fits and the next pass goes on. 0 means DefaultCompactionKeys.
	MaxKeys int
	// Stable, when set, is the first offset that is not yet stable (the
	// last stable offset of an open transaction): a segment reaching it is
	// not cleaned, so an open transaction's records never supersede a key.
	// It is called once per pass, before the partition is locked.
	Stable func() int64

	// Records lists a batch's records. opaque says the batch is to be kept
	// whole whatever its records (a transaction marker, say).
	Records func(m BatchMeta, data []byte) (recs []Record, opaque bool, err error)
	// Rebuild returns the batch holding only keep (in order, a subset of
	// what Records returned), still covering the batch's offsets; keep may
	// be empty.
	Rebuild func(m BatchMeta, data []byte, keep []Record) ([]byte, error)
}

// Record is what compaction knows of one record.
type Record struct {
	Offset    int64
	Timestamp int64 // ms
	Key       []byte
	Tombstone bool   // a null value: deletes its key
	Raw       []byte // the record's bytes, for Rebuild
}

// CompactStats says what a pass did.
type CompactStats struct {
	Segments     int   // segments rewritten
	ReadBytes    int64 // bytes of the segments rewritten, before
	WrittenBytes int64 // and after
	Removed      int64 // records left out
	Checkpoint   int64 // the cleaner checkpoint: offsets below it are clean
}

// DefaultCompactionKeys is the key map's bound when Compaction.MaxKeys is 0.
const DefaultCompactionKeys = 1 << 18

// keyHash names a key in the map: keys are held only as hashes.
type keyHash [sha256.Size]byte

var errSegmentGone = errors.New("segment removed during compaction")

// Compact runs one pass of the log cleaner, as Kafka's does: the sealed
// segments up to the first one younger than MinLagMs are cleanable (the
// active segment never is); when the part of them beyond the cleaner
// checkpoint (dirty) is at least MinDirtyRatio of them, a map of each key
// in the dirty part to its newest offset is built, and every cleanable
// segment up to the map's end is rewritten keeping only each key's newest
// record, without tombstones older than DeleteRetentionMs. Batches keep
// their offsets, so a compacted log has gaps. A batch left with no records
// is dropped, unless it is its segment's last or its producer's newest
// (kept empty, so the segment and the producer's sequence state stay).
//
// The rewritten segments are sealed under the current key and swapped in
// as re-encryption swaps them, and a pass holds the lock re-encryption
// holds, so the two never overlap. A pass stops at ctx's end or when the
// store closes, leaving every segment whole, old or new.
func (p *Partition) Compact(ctx context.Context, c Compaction) (CompactStats, error) {
	const op = "seglog.Compact"
	var st CompactStats
	if err := p.store.usable(op); err != nil {
		return st, err
	}
	if c.MaxKeys <= 0 {
		c.MaxKeys = DefaultCompactionKeys
	}
	p.store.reenc.Lock()
	defer p.store.reenc.Unlock()
	kr := p.store.keys.Load()
	// Asked before any of the partition's locks is taken: the broker's
	// answer reads the partition (its end offset).
	stable := int64(math.MaxInt64)
	if c.Stable != nil {
		stable = c.Stable()
	}
	plan, err := p.planCompaction(op, c, stable)
	st.Checkpoint = plan.checkpoint
	if err != nil || len(plan.dirty) == 0 {
		return st, err
	}
	latest, mapEnd, err := p.mapKeys(ctx, kr, plan, c)
	if errors.Is(err, errSegmentGone) {
		return st, nil
	}
	if err != nil {
		return st, p.compactError(ctx, op, err)
	}
	horizon := c.Now.UnixMilli() - c.DeleteRetentionMs
	for _, seg := range plan.segs {
		if seg.base >= mapEnd {
			break
		}
		before := seg.size
		var removed int64
		done, err := p.rewriteSegment(ctx, seg, kr, func(int64) {}, func(plain []byte, last bool) ([]byte, error) {
			if err := p.store.usable(op); err != nil {
				return nil, err
			}
			m := decodeMeta(plain)
			data := plain[metaLen:]
			recs, opaque, err := c.Records(m, data)
			if err != nil || opaque {
				return plain, err
			}
			keep := recs[:0:0]
			for _, r := range recs {
				newest := r.Offset >= mapEnd
				if !newest {
					off, mapped := latest[sha256.Sum256(r.Key)]
					newest = !mapped || off == r.Offset
				}
				if newest && !(r.Tombstone && r.Offset < mapEnd && r.Timestamp < horizon) {
					keep = append(keep, r)
				}
			}
			removed += int64(len(recs) - len(keep))
			switch {
			case len(keep) == len(recs):
				return plain, nil
			case len(keep) == 0 && !last && !plan.producerLast(m):
				return nil, nil
			}
			b, err := c.Rebuild(m, data, keep)
			if err != nil {
				return nil, err
			}
			m.Size = int32(len(b))
			return append(encodeMeta(make([]byte, 0, metaLen+len(b)), m), b...), nil
		})
		if err != nil {
			return st, p.compactError(ctx, op, err)
		}
		if !done {
			continue
		}
		st.Segments++
		st.ReadBytes += before
		st.WrittenBytes += seg.size
		st.Removed += removed
	}
	p.mu.Lock()
	p.cleaned = max(p.cleaned, mapEnd)
	st.Checkpoint = p.cleaned
	p.mu.Unlock()
	return st, nil
}

func (p *Partition) compactError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return ctxError(op, ctx.Err())
	}
	if e := p.store.usable(op); e != nil {
		return e
	}
	if errs.As(err) != nil {
		return err
	}
	return dataError(op, err)
}

// compactionPlan is what a pass works on, fixed at its start.
type compactionPlan struct {
	segs       []*segment // the cleanable segments, oldest first
	dirty      []*segment // those beyond the checkpoint
	checkpoint int64
	producers  map[int64]int64 // producer ID -> base offset of its newest batch in the log
}

func (pl compactionPlan) producerLast(m BatchMeta) bool {
	return m.ProducerID >= 0 && pl.producers[m.ProducerID] == m.BaseOffset
}

// planCompaction picks the cleanable segments and decides whether the
// dirty part is worth a pass.
func (p *Partition) planCompaction(op string, c Compaction, stable int64) (compactionPlan, error) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	pl := compactionPlan{checkpoint: max(p.cleaned, p.start)}
	if err := p.check(op); err != nil {
		return pl, err
	}
	lagLimit := c.Now.UnixMilli() - c.MinLagMs
	var clean, dirty int64
	for _, seg := range p.segs[:len(p.segs)-1] {
		if seg.maxTs > lagLimit || seg.end() > stable {
			break
		}
		pl.segs = append(pl.segs, seg)
		if seg.end() <= pl.checkpoint {
			clean += seg.size
		} else {
			dirty += seg.size
			pl.dirty = append(pl.dirty, seg)
		}
	}
	if dirty == 0 || float64(dirty)/float64(clean+dirty) < c.MinDirtyRatio {
		pl.dirty = nil
		return pl, nil
	}
	kr := p.store.keys.Load()
	pl.producers = map[int64]int64{}
	for _, seg := range p.segs {
		es, err := p.entriesOf(seg, kr)
		if err != nil {
			return pl, dataError(op, err)
		}
		for _, e := range es {
			if e.meta.ProducerID >= 0 {
				pl.producers[e.meta.ProducerID] = e.meta.BaseOffset
			}
		}
	}
	return pl, nil
}

// mapKeys maps each key of the dirty segments to its newest offset, up to
// c.MaxKeys keys, and returns the offset up to which the map is complete.
// A batch whose new keys would overflow the map ends it there (the first
// batch is always mapped, so every pass makes progress).
func (p *Partition) mapKeys(ctx context.Context, kr *keyring, plan compactionPlan, c Compaction) (map[keyHash]int64, int64, error) {
	latest := map[keyHash]int64{}
	mapEnd := int64(-1)
	errFull := errors.New("key map full")
	for _, seg := range plan.dirty {
		p.mu.RLock()
		f, size := seg.f, seg.size
		p.mu.RUnlock()
		b, err := readAll(f, size)
		if errors.Is(err, os.ErrClosed) {
			return nil, 0, errSegmentGone
		}
		if err != nil {
			return nil, 0, err
		}
		var hashes []keyHash
		_, err = scanBlocks(b, kr, blockID{kind: kindData, stream: p.stream, base: seg.base}, func(_ int64, _ int, _ string, plain []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := p.store.usable("seglog.Compact"); err != nil {
				return err
			}
			if len(plain) < metaLen {
				return errBatch
			}
			m := decodeMeta(plain)
			if m.LastOffset() < plan.checkpoint {
				return nil // cleaned by an earlier pass
			}
			recs, _, err := c.Records(m, plain[metaLen:])
			if err != nil {
				return err
			}
			hashes = hashes[:0]
			fresh := 0
			for _, r := range recs {
				h := sha256.Sum256(r.Key)
				hashes = append(hashes, h)
				if _, ok := latest[h]; !ok {
					fresh++
				}
			}
			if mapEnd >= 0 && len(latest)+fresh > c.MaxKeys {
				return errFull
			}
			for i, r := range recs {
				latest[hashes[i]] = r.Offset
			}
			mapEnd = m.LastOffset() + 1
			return nil
		})
		if errors.Is(err, errFull) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
	}
	return latest, mapEnd, nil
}

// CleanerCheckpoint is the offset below which the log cleaner has compacted
// the log since the partition was opened (the log-start offset before any
// pass).
func (p *Partition) CleanerCheckpoint() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return max(p.cleaned, p.start)
}

// AppendAt is Append at m.BaseOffset, which may lie beyond the end: a
// restore copies a compacted log with its gaps, at the same offsets.
func (p *Partition) AppendAt(ctx context.Context, m BatchMeta, data []byte) (int64, error) {
	if m.BaseOffset < 0 {
		return 0, outOfRange("seglog.Append")
	}
	return waitDurable(p.appendAsync(ctx, m, data, m.BaseOffset))
}
