package broker

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"
)

// ListenerHealth is what an operator needs to know about an accept loop:
// whether its last accept succeeded, and how often and how recently it
// failed.
type ListenerHealth struct {
	Healthy      bool
	AcceptErrors uint64
	LastError    string
	LastErrorAt  time.Time
}

// Acceptor keeps accepting connections from a listener through errors that
// pass, such as a burst of "too many open files": one such error must not
// leave a bound socket whose connections queue unanswered until a restart.
type Acceptor struct {
	ln   net.Listener
	log  *slog.Logger
	warn logLimiter

	mu     sync.Mutex
	health ListenerHealth
}

// Accept backoff, as net/http's: 5 ms doubling up to 1 s.
const (
	acceptRetryMin = 5 * time.Millisecond
	acceptRetryMax = time.Second
)

// NewAcceptor accepts from ln, logging failures to log at most once every
// ten seconds.
func NewAcceptor(ln net.Listener, log *slog.Logger) *Acceptor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Acceptor{ln: ln, log: log, warn: logLimiter{every: 10 * time.Second}, health: ListenerHealth{Healthy: true}}
}

// Accept returns the next connection, or an error wrapping net.ErrClosed
// once the listener is closed. Every other error is retried after a pause.
func (a *Acceptor) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := a.ln.Accept()
		if err == nil {
			if delay != 0 {
				a.mu.Lock()
				a.health.Healthy = true
				a.mu.Unlock()
				a.log.Info("kafka listener accepts connections again", "addr", a.ln.Addr().String())
			}
			return c, nil
		}
		if errors.Is(err, net.ErrClosed) {
			return nil, err
		}
		delay = min(max(2*delay, acceptRetryMin), acceptRetryMax)
		now := time.Now()
		a.mu.Lock()
		a.health.Healthy = false
		a.health.AcceptErrors++
		a.health.LastError = err.Error()
		a.health.LastErrorAt = now
		a.mu.Unlock()
		if ok, suppressed := a.warn.allow(now); ok {
			a.log.Warn("kafka listener cannot accept; retrying", "addr", a.ln.Addr().String(), "err", err,
				"retry_in", delay, "suppressed", suppressed)
		}
		time.Sleep(delay)
	}
}

// Health reports the accept loop's state.
func (a *Acceptor) Health() ListenerHealth {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.health
}

// logLimiter lets one log line through per interval and counts the ones
// it held back, so a flood of bad connections costs a line, not thousands.
type logLimiter struct {
	every time.Duration

	mu         sync.Mutex
	next       time.Time
	suppressed int
}

// allow says whether to log now, and how many lines were held back since
// the last one that was.
func (l *logLimiter) allow(now time.Time) (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Before(l.next) {
		l.suppressed++
		return false, 0
	}
	n := l.suppressed
	l.suppressed = 0
	l.next = now.Add(l.every)
	return true, n
}
