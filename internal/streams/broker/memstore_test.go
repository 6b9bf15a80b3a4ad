package broker

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// memStore is an in-memory Storage for tests, with the semantics the
// encrypted seglog store promises.
type memStore struct {
	// durable, when set, is what every append's durability waits on (a
	// test holds or fails it).
	durable func() error

	mu    sync.Mutex
	meta  map[string][]byte
	parts map[string]*memPartition
}

func newMemStore() *memStore {
	return &memStore{meta: map[string][]byte{}, parts: map[string]*memPartition{}}
}

func (s *memStore) GetMeta(key string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.meta[key]
	return v, ok
}

func (s *memStore) PutMeta(key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.meta[key] = append([]byte(nil), value...)
	return nil
}

func (s *memStore) DeleteMeta(key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.meta, key)
	return nil
}

func (s *memStore) ListMeta(prefix string) map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range s.meta {
		if strings.HasPrefix(k, prefix) {
			out[k] = v
		}
	}
	return out
}

func (s *memStore) Partition(name string, create bool) (PartitionLog, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return nil, errors.New("memstore: bad partition name")
		}
	}
	p, ok := s.parts[name]
	if !ok {
		if !create {
			return nil, errors.New("memstore: no such partition")
		}
		p = &memPartition{store: s, changed: make(chan struct{})}
		s.parts[name] = p
	}
	return p, nil
}

func (s *memStore) DropPartition(name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.parts, name)
	return nil
}

func (s *memStore) metaKeys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.meta))
}

type memPartition struct {
	store      *memStore
	mu         sync.Mutex
	start, end int64
	batches    []seglog.StoredBatch
	size       int64
	changed    chan struct{}
}

func (p *memPartition) AppendAsync(ctx context.Context, m seglog.BatchMeta, data []byte) (int64, func() error, error) {
	base, err := p.append(ctx, m, data)
	return base, p.store.durable, err
}

func (p *memPartition) append(_ context.Context, m seglog.BatchMeta, data []byte) (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m.BaseOffset = p.end
	m.Size = int32(len(data))
	p.batches = append(p.batches, seglog.StoredBatch{Meta: m, Data: append([]byte(nil), data...)})
	p.end += int64(m.Records)
	p.size += int64(len(data))
	close(p.changed)
	p.changed = make(chan struct{})
	return m.BaseOffset, nil
}

func (p *memPartition) Read(_ context.Context, from int64, maxBytes int32) ([]seglog.StoredBatch, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []seglog.StoredBatch
	total := 0
	for _, b := range p.batches {
		if b.Meta.LastOffset() < from {
			continue
		}
		if len(out) > 0 && total+len(b.Data) > int(maxBytes) {
			break
		}
		out = append(out, b)
		total += len(b.Data)
	}
	return out, nil
}

func (p *memPartition) ReadAppend(ctx context.Context, from int64, maxBytes int32, dst []byte) ([]byte, []byte, []seglog.BatchMeta, error) {
	bs, err := p.Read(ctx, from, maxBytes)
	if err != nil {
		return dst, nil, nil, err
	}
	start := len(dst)
	var metas []seglog.BatchMeta
	for _, b := range bs {
		dst = append(dst, b.Data...)
		metas = append(metas, b.Meta)
	}
	return dst, dst[start:], metas, nil
}

func (p *memPartition) FirstBatchSize(from int64) int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.batches {
		if b.Meta.LastOffset() >= from && from >= p.start {
			return b.Meta.Size
		}
	}
	return 0
}

func (p *memPartition) StartOffset() int64 { p.mu.Lock(); defer p.mu.Unlock(); return p.start }
func (p *memPartition) EndOffset() int64   { p.mu.Lock(); defer p.mu.Unlock(); return p.end }
func (p *memPartition) SizeBytes() int64   { p.mu.Lock(); defer p.mu.Unlock(); return p.size }

func (p *memPartition) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

func (p *memPartition) OffsetForTimestamp(ts int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range p.batches {
		if b.Meta.MaxTimestamp >= ts {
			return max(b.Meta.BaseOffset, p.start)
		}
	}
	return p.end
}

func (p *memPartition) Tail(n int) []seglog.BatchMeta {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []seglog.BatchMeta
	for _, b := range p.batches[max(0, len(p.batches)-n):] {
		out = append(out, b.Meta)
	}
	return out
}

func (p *memPartition) DeleteBefore(offset int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropWhile(func(b seglog.StoredBatch) bool { return b.Meta.LastOffset() < offset })
	p.start = max(p.start, min(offset, p.end))
	return nil
}

// Retain treats each batch as a segment and, like seglog with its active
// segment, never drops the newest one.
func (p *memPartition) Retain(now time.Time, retentionMs, retentionBytes int64) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dropWhile(func(b seglog.StoredBatch) bool {
		return len(p.batches) > 1 && (retentionMs >= 0 && b.Meta.MaxTimestamp < now.UnixMilli()-retentionMs ||
			retentionBytes >= 0 && p.size-int64(len(b.Data)) >= retentionBytes)
	})
	return nil
}

func (p *memPartition) dropWhile(drop func(seglog.StoredBatch) bool) {
	for len(p.batches) > 0 && drop(p.batches[0]) {
		b := p.batches[0]
		p.batches = p.batches[1:]
		p.size -= int64(len(b.Data))
		p.start = b.Meta.LastOffset() + 1
	}
}
