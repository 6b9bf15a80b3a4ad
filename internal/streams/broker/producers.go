package broker

import (
	"strconv"
	"sync"
)

// producerIDKey holds the next producer id. It is written before an id is
// handed out, so an id is never given twice, even across restarts.
const producerIDKey = "producer-id/next"

type producerIDs struct {
	st Storage
	mu sync.Mutex
}

func newProducerIDs(st Storage) *producerIDs { return &producerIDs{st: st} }

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
	if err := p.st.PutMeta(producerIDKey, []byte(strconv.FormatInt(id+1, 10))); err != nil {
		return 0, err
	}
	return id, nil
}
