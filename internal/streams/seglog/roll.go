package seglog

import (
	"sync/atomic"
	"time"
)

// DefaultSegmentBytes is the segment size of a store whose Options do not
// set one, and of a partition without SetRoll.
const DefaultSegmentBytes = defaultSegmentBytes

// rollPolicy is when a partition starts a new segment besides the store's
// size: a topic's segment.bytes and segment.ms.
type rollPolicy struct {
	bytes atomic.Int64 // 0: the store's Options.SegmentBytes
	ms    atomic.Int64 // 0: never by age
}

// SetRoll sets when the partition rolls its active segment: once it would
// exceed segmentBytes (0: the store's size), or once its first batch's
// timestamp is segmentMs old (0: never), as Kafka's segment.bytes and
// segment.ms do. It takes effect at the next append.
func (p *Partition) SetRoll(segmentBytes, segmentMs int64) {
	p.roll.bytes.Store(max(segmentBytes, 0))
	p.roll.ms.Store(max(segmentMs, 0))
}

// shouldRoll reports whether an append of a block of blockLen bytes starts
// a new segment. The caller holds p.mu.
func (p *Partition) shouldRoll(seg *segment, blockLen int64, now time.Time) bool {
	if len(seg.entries) == 0 {
		return false
	}
	limit := p.roll.bytes.Load()
	if limit <= 0 {
		limit = p.store.opts.SegmentBytes
	}
	if seg.size+blockLen > limit {
		return true
	}
	// Kafka measures a segment's age from its first batch's timestamp; a
	// batch without one (-1) never ages its segment.
	ms := p.roll.ms.Load()
	first := seg.entries[0].meta.MaxTimestamp
	return ms > 0 && first >= 0 && now.UnixMilli()-first > ms
}
