// Package connhold keeps refused connections open, reading nothing, for a
// while before closing them, as Kafka throttles connections over its
// connection quotas (KIP-612): a client that redials as soon as it is closed
// then costs the server one accept per delay instead of one per round trip.
package connhold

import (
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultDelay is how long a refused connection is held before it is
// closed: a client that redials at once then costs an accept every five
// seconds, and one that was merely unlucky (a fleet behind one NAT starting
// at once) is let go soon enough to retry with its usual backoff.
const DefaultDelay = 5 * time.Second

// Holder holds refused connections, at most Max at once: each costs a file
// descriptor, so past that a refused connection is closed at once, and
// holding can never take the descriptors the served connections need.
type Holder struct {
	max   int
	delay time.Duration

	mu      sync.Mutex
	holding int
	held    atomic.Uint64 // connections held, then closed
	atOnce  atomic.Uint64 // connections closed at once, the holder being full
}

// New is a holder of at most limit connections (at least 1), each for
// delay (DefaultDelay when 0).
func New(limit int, delay time.Duration) *Holder {
	if delay <= 0 {
		delay = DefaultDelay
	}
	return &Holder{max: max(limit, 1), delay: delay}
}

// Process is the process's holder, shared by its listeners so that their
// held connections together stay within one budget: a quarter of
// RLIMIT_NOFILE (256 when it is unknown), the rest serving connections and
// files.
var Process = sync.OnceValue(func() *Holder { return New(budget(OpenFileLimit()), DefaultDelay) })

func budget(nofile uint64) int {
	if nofile == 0 {
		return 256
	}
	return int(min(nofile/4, 1<<16))
}

// OpenFileLimit is the process's RLIMIT_NOFILE (its soft limit, which Go
// raises to the hard one at start); 0 when unknown.
func OpenFileLimit() uint64 {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) != nil || lim.Cur == unix.RLIM_INFINITY {
		return 0
	}
	return lim.Cur
}

// Delay is how long a held connection is kept.
func (h *Holder) Delay() time.Duration { return h.delay }

// Hold keeps c open, unread, for the holder's delay and then closes it, or
// closes it at once when the holder is full; it says which. Nothing reads
// from c meanwhile, so what the client sends waits in the kernel's buffers.
func (h *Holder) Hold(c net.Conn) (held bool) {
	h.mu.Lock()
	if h.holding >= h.max {
		h.mu.Unlock()
		h.atOnce.Add(1)
		c.Close()
		return false
	}
	h.holding++
	h.mu.Unlock()
	// A timer, not a goroutine: a held connection costs its descriptor and
	// a few hundred bytes.
	time.AfterFunc(h.delay, func() {
		c.Close()
		h.mu.Lock()
		h.holding--
		h.held.Add(1)
		h.mu.Unlock()
	})
	return true
}

// Stats are what a holder did.
type Stats struct {
	Holding      int    `json:"holding"`        // held now
	Max          int    `json:"max"`            // the most held at once
	Held         uint64 `json:"held"`           // held, then closed
	ClosedAtOnce uint64 `json:"closed_at_once"` // closed at once, the holder being full
}

// Stats says what the holder holds and did.
func (h *Holder) Stats() Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return Stats{Holding: h.holding, Max: h.max, Held: h.held.Load(), ClosedAtOnce: h.atOnce.Load()}
}
