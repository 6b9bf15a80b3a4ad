package streams

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/connhold"
	"github.com/keyline/keyline/internal/ratelog"
)

// front owns a deployment's Kafka socket and hands each accepted connection
// to the broker of the moment. Swapping brokers (unlocked over the
// encrypted log, or locked over nothing) never closes the socket, so a
// locked deployment still answers and says why it refuses a login.
type front struct {
	ln     net.Listener
	gate   *connhold.Gate // its brokers shut out sources they cannot hold
	log    *slog.Logger
	errLog ratelog.Limiter
	okLog  ratelog.Limiter // a listener short of descriptors flaps
	done   chan struct{}

	mu       sync.Mutex
	cur      *handoff
	attached chan struct{} // closed (and replaced) by each attach
	health   ListenerHealth
	wg       sync.WaitGroup
}

// ListenerHealth is how a deployment's Kafka socket fares: an accept that
// fails (out of file descriptors, say) is retried, and counted here.
type ListenerHealth struct {
	Healthy      bool       `json:"healthy"` // the last accept succeeded, or none failed
	AcceptErrors uint64     `json:"accept_errors"`
	LastError    string     `json:"last_error,omitempty"`
	LastErrorAt  *time.Time `json:"last_error_at,omitempty"`
	// Gate is what the socket's filter shuts out: the sources refused
	// past the holder's budget (connhold.Gate).
	Gate connhold.GateStats `json:"gate"`
}

func newFront(ln net.Listener, log *slog.Logger) *front {
	f := &front{ln: ln, gate: connhold.NewGate(ln, connhold.Process().Delay()), log: log, done: make(chan struct{}), attached: make(chan struct{}), health: ListenerHealth{Healthy: true}}
	f.wg.Add(1)
	go f.run()
	return f
}

// Accept errors are retried after a pause doubling from minAcceptBackoff to
// maxAcceptBackoff, as net/http does: running out of file descriptors
// (EMFILE, ENFILE) or memory passes once connections close, and a
// connection aborted before its accept concerns that connection only. Only
// closing the socket stops the loop.
const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

func (f *front) run() {
	defer f.wg.Done()
	var backoff time.Duration
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
			f.acceptFailed(err, backoff)
			select {
			case <-time.After(backoff):
			case <-f.done:
				return
			}
			continue
		}
		if backoff != 0 {
			backoff = 0
			f.accepting()
		}
		if !f.hand(c) {
			c.Close()
		}
	}
}

// attachWait bounds how long an accepted connection waits for a broker:
// the socket is bound (and its address published) just before the first
// broker attaches, and a swap of brokers leaves a moment with none. A
// client whose connection is closed then may not retry (franz-go gives up
// during ApiVersions), so the connection waits for the next broker instead.
const attachWait = 10 * time.Second

// hand gives c to the current broker, waiting up to attachWait for one.
func (f *front) hand(c net.Conn) bool {
	var deadline <-chan time.Time
	for {
		f.mu.Lock()
		h, attached := f.cur, f.attached
		f.mu.Unlock()
		if h != nil && h.deliver(c) {
			return true
		}
		if deadline == nil {
			t := time.NewTimer(attachWait)
			defer t.Stop()
			deadline = t.C
		}
		select {
		case <-attached:
		case <-deadline:
			return false
		case <-f.done:
			return false
		}
	}
}

func (f *front) acceptFailed(err error, retryIn time.Duration) {
	now := time.Now()
	f.mu.Lock()
	f.health.Healthy = false
	f.health.AcceptErrors++
	f.health.LastError, f.health.LastErrorAt = err.Error(), &now
	f.mu.Unlock()
	f.errLog.Log(f.log, slog.LevelError, "streams: Kafka listener cannot accept connections; retrying", "addr", f.ln.Addr().String(), "err", err, "retry_in", retryIn)
}

func (f *front) accepting() {
	f.mu.Lock()
	f.health.Healthy = true
	f.mu.Unlock()
	f.okLog.Log(f.log, slog.LevelInfo, "streams: Kafka listener accepts connections again", "addr", f.ln.Addr().String())
}

// status says how the socket fares.
func (f *front) status() ListenerHealth {
	f.mu.Lock()
	h := f.health
	f.mu.Unlock()
	h.Gate = f.gate.Stats()
	return h
}

// attach makes h receive the next connections.
func (f *front) attach(h *handoff) {
	f.mu.Lock()
	f.cur = h
	close(f.attached)
	f.attached = make(chan struct{})
	f.mu.Unlock()
}

// close stops accepting; brokers are closed by their owner.
func (f *front) close() {
	close(f.done)
	f.ln.Close()
	f.gate.Close()
	f.wg.Wait()
}

// handoff is the net.Listener one broker serves: connections arrive from
// the front, and closing it leaves the socket open.
type handoff struct {
	addr  net.Addr
	gate  *connhold.Gate
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newHandoff(addr net.Addr, gate *connhold.Gate) *handoff {
	return &handoff{addr: addr, gate: gate, conns: make(chan net.Conn), done: make(chan struct{})}
}

// Gate is the front's: the broker shuts refused sources out at the socket.
func (h *handoff) Gate() *connhold.Gate { return h.gate }

func (h *handoff) deliver(c net.Conn) bool {
	select {
	case h.conns <- c:
		return true
	case <-h.done:
		return false
	}
}

func (h *handoff) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, net.ErrClosed
	}
}

func (h *handoff) Close() error {
	h.once.Do(func() { close(h.done) })
	return nil
}

func (h *handoff) Addr() net.Addr { return h.addr }
