package broker

import (
	"strconv"
	"sync"
)

// producerIDKey holds the next producer id. It is written before an id is
// handed out, so an id is never given twice, even across restarts.
const producerIDKey = "producer-id/next"

type producerIDs struct {
	st    Storage
	alloc func(floor int64) (int64, error) // nil: the counter in st
	mu    sync.Mutex
}

func newProducerIDs(st Storage, alloc func(int64) (int64, error)) *producerIDs {
	return &producerIDs{st: st, alloc: alloc}
}

// next returns a fresh producer id.
func (p *producerIDs) next() (int64, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := int64(1)
	if v, ok := p.st.GetMeta(producerIDKey); ok {
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil && n > 0 {
			id = n
		}
	}
	if p.alloc != nil {
		return p.alloc(id)
	}
	if err := p.st.PutMeta(producerIDKey, []byte(strconv.FormatInt(id+1, 10))); err != nil {
		return 0, err
	}
	return id, nil
}
