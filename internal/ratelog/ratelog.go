// Package ratelog writes a recurring log line at most once per interval and
// says how many it held back, so that a flood (of refused connections, of
// failing accepts) becomes a summary instead of filling the disk.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultEvery is the interval of a zero Limiter.
const DefaultEvery = 10 * time.Second

// Limiter lets one line through per Every; the zero value is ready to use.
type Limiter struct {
	Every time.Duration

	mu   sync.Mutex
	next time.Time
	held int
}

// Log writes msg at level unless a line went out less than Every ago; then
// it only counts it, and the next line written carries the count as
// "suppressed".
func (l *Limiter) Log(log *slog.Logger, level slog.Level, msg string, args ...any) {
	every := l.Every
	if every <= 0 {
		every = DefaultEvery
	}
	now := time.Now()
	l.mu.Lock()
	if now.Before(l.next) {
		l.held++
		l.mu.Unlock()
		return
	}
	held := l.held
	l.held, l.next = 0, now.Add(every)
	l.mu.Unlock()
	if held > 0 {
		args = append(args, "suppressed", held)
	}
	log.Log(context.Background(), level, msg, args...)
}
