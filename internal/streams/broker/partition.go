package broker

import (
	"context"
	"math"
	"sync"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/keyline/keyline/internal/streams/seglog"
)

const (
	// dedupWindow is how many batches per producer a partition remembers;
	// franz-go keeps up to 5 produce requests in flight.
	dedupWindow = 5
	// dedupTail is how many batches of a log's tail rebuild the windows
	// at start.
	dedupTail = 256
)

// partition is one partition: its log and the idempotent producers' recent
// sequences.
type partition struct {
	index int32
	log   PartitionLog

	mu        sync.Mutex // serialises appends with the dedup check
	producers map[int64]*producerWindow
	// lastDurable waits for the newest append to be on disk; a retried
	// duplicate is acknowledged only after it, as its original is.
	lastDurable func() error
}

// producerWindow is what a partition remembers of one producer id.
type producerWindow struct {
	epoch   int16
	batches []sequenced // oldest first, at most dedupWindow
}

type sequenced struct {
	first, last int32
	offset      int64
}

func openPartition(st Storage, id uuid.UUID, index int32, create bool) (*partition, error) {
	log, err := st.Partition(partitionName(id, index), create)
	if err != nil {
		return nil, err
	}
	p := &partition{index: index, log: log, producers: map[int64]*producerWindow{}}
	for _, m := range log.Tail(dedupTail) {
		if m.ProducerID >= 0 {
			p.remember(m)
		}
	}
	return p, nil
}

// lastSequence is the sequence of a batch's last record; sequences wrap from
// MaxInt32 to 0.
func lastSequence(first, records int32) int32 {
	return int32((int64(first) + int64(records) - 1) % (math.MaxInt32 + 1))
}

func (p *partition) remember(m seglog.BatchMeta) {
	w := p.producers[m.ProducerID]
	if w == nil || w.epoch != m.ProducerEpoch {
		w = &producerWindow{epoch: m.ProducerEpoch}
		p.producers[m.ProducerID] = w
	}
	w.batches = append(w.batches, sequenced{first: m.BaseSequence, last: lastSequence(m.BaseSequence, m.Records), offset: m.BaseOffset})
	if len(w.batches) > dedupWindow {
		w.batches = w.batches[len(w.batches)-dedupWindow:]
	}
}

// check decides an idempotent batch's fate: a duplicate returns the offset it
// was stored at, a gap or old epoch an error. A producer the partition does
// not know (new, or its batches aged out) may start at any sequence.
func (p *partition) check(m seglog.BatchMeta) (dupOffset int64, dup bool, kerrr *kerr.Error) {
	w := p.producers[m.ProducerID]
	if w == nil {
		return 0, false, nil
	}
	switch {
	case m.ProducerEpoch < w.epoch:
		return 0, false, kerr.InvalidProducerEpoch
	case m.ProducerEpoch > w.epoch:
		if m.BaseSequence != 0 {
			return 0, false, kerr.OutOfOrderSequenceNumber
		}
		return 0, false, nil
	}
	last := lastSequence(m.BaseSequence, m.Records)
	for _, s := range w.batches {
		if s.first == m.BaseSequence && s.last == last {
			return s.offset, true, nil
		}
	}
	if len(w.batches) > 0 {
		prev := w.batches[len(w.batches)-1].last
		next := int32((int64(prev) + 1) % (math.MaxInt32 + 1))
		if m.BaseSequence != next {
			return 0, false, kerr.OutOfOrderSequenceNumber
		}
	}
	return 0, false, nil
}

// append stores a validated batch and returns its base offset and what to
// wait on before acknowledging it (nil: nothing). For an idempotent
// producer a retried batch is not stored twice.
func (p *partition) append(ctx context.Context, m seglog.BatchMeta, data []byte) (int64, func() error, *kerr.Error, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m.ProducerID >= 0 {
		off, dup, kerrr := p.check(m)
		if kerrr != nil {
			return 0, nil, kerrr, nil
		}
		if dup {
			return off, p.lastDurable, nil, nil
		}
	}
	base, durable, err := p.log.AppendAsync(ctx, m, data)
	if err != nil {
		return 0, nil, kerr.KafkaStorageError, err
	}
	p.lastDurable = durable
	if m.ProducerID >= 0 {
		m.BaseOffset = base
		p.remember(m)
	}
	return base, durable, nil, nil
}
