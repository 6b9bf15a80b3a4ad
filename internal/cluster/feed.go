// Package cluster lets several `keyline serve` processes (nodes) share one
// PostgreSQL database: a change feed that keeps every node's caches of
// security decisions true (Feed), and the table of live nodes with their
// heartbeats (Membership). On SQLite, one process, the feed does nothing and
// every cache is trusted.
package cluster

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyline/keyline/internal/ratelog"
	"github.com/keyline/keyline/internal/store"
)

// Feed timings.
const (
	// PollInterval is how often the feed reads new changes when no
	// notification woke it: a lost notification delays a change this long.
	PollInterval = 250 * time.Millisecond
	// StaleAfter is how long the feed may go without reading the changes
	// table before caches stop being trusted: services then go to the
	// database on each call until it catches up, and reload everything.
	StaleAfter = time.Second
	// keepChanges is how long change rows are kept. A node that read none
	// for this long has long stopped trusting its caches.
	keepChanges = 10 * time.Minute
)

// Feed reads the changes other nodes commit (store.Tx.Changed) and calls
// the subscribers of their topics. A nil Feed, or one on SQLite, is always
// trusted and never calls anyone.
type Feed struct {
	db     *store.DB
	logger *slog.Logger
	errLog ratelog.Limiter

	mu       sync.Mutex
	subs     map[string][]func(key string)
	prefixes map[string][]func(topic, key string)
	resets   []func()

	// lastOK is when the feed last read the changes table (UnixNano, real
	// time: the feed's health is no business of an injected clock).
	lastOK atomic.Int64
	// last is the seq of the newest change read (the run loop's only).
	last int64
	// listening says whether the LISTEN connection is up (for status).
	listening atomic.Bool
}

// NewFeed returns the change feed of db, positioned at the newest change:
// create it before the services load their caches from the database, and
// Start it once they have subscribed, so no change committed in between is
// missed (one applied twice is harmless).
func NewFeed(ctx context.Context, db *store.DB, logger *slog.Logger) (*Feed, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	f := &Feed{db: db, logger: logger, subs: map[string][]func(string){}}
	if !f.shared() {
		return f, nil
	}
	last, err := db.LastChange(ctx)
	if err != nil {
		return nil, err
	}
	f.last = last
	f.lastOK.Store(time.Now().UnixNano())
	return f, nil
}

func (f *Feed) shared() bool { return f != nil && f.db != nil && f.db.Shared() }

// Subscribe calls fn with the key of every change to topic made by another
// node, after its commit. fn runs on the feed's goroutine: it must be quick
// and must not wait for the feed.
func (f *Feed) Subscribe(topic string, fn func(key string)) {
	if !f.shared() {
		return
	}
	f.mu.Lock()
	f.subs[topic] = append(f.subs[topic], fn)
	f.mu.Unlock()
}

// SubscribePrefix calls fn with the topic and key of every change, made by
// another node, to a topic that starts with prefix (topics named per
// object, such as a deployment's). fn runs on the feed's goroutine, as a
// Subscribe function does.
func (f *Feed) SubscribePrefix(prefix string, fn func(topic, key string)) {
	if !f.shared() {
		return
	}
	f.mu.Lock()
	if f.prefixes == nil {
		f.prefixes = map[string][]func(string, string){}
	}
	f.prefixes[prefix] = append(f.prefixes[prefix], fn)
	f.mu.Unlock()
}

// OnReset calls fn when the feed catches up after being unable to read
// changes for longer than StaleAfter (some changes may be gone unread):
// fn drops or reloads everything it caches.
func (f *Feed) OnReset(fn func()) {
	if !f.shared() {
		return
	}
	f.mu.Lock()
	f.resets = append(f.resets, fn)
	f.mu.Unlock()
}

// Trusted says whether caches kept true by the feed may answer: always on
// SQLite; on PostgreSQL only while the feed read the changes table within
// StaleAfter. It is read on every call that uses a cache.
func (f *Feed) Trusted() bool {
	if !f.shared() {
		return true
	}
	return time.Since(time.Unix(0, f.lastOK.Load())) < StaleAfter
}

// Status is the feed's health, as GET /healthz and the node list show it.
type Status struct {
	Shared    bool      `json:"shared"`    // several nodes may share the database
	Trusted   bool      `json:"trusted"`   // caches are up to date
	Listening bool      `json:"listening"` // notifications arrive (else only the poll)
	LastRead  time.Time `json:"last_read,omitzero"`
}

// Status reports the feed's health.
func (f *Feed) Status() Status {
	if !f.shared() {
		return Status{Trusted: true}
	}
	st := Status{Shared: true, Trusted: f.Trusted(), Listening: f.listening.Load()}
	if ns := f.lastOK.Load(); ns != 0 {
		st.LastRead = time.Unix(0, ns).UTC()
	}
	return st
}

// Start follows the feed until ctx ends.
func (f *Feed) Start(ctx context.Context) {
	if !f.shared() {
		return
	}
	wake := make(chan struct{}, 1)
	go f.listen(ctx, wake)
	go f.run(ctx, wake)
}

// listen keeps a LISTEN connection open and turns its notifications into
// wake-ups; a lost connection is opened again (the poll covers the gap).
func (f *Feed) listen(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		l, err := f.db.ListenChanges(ctx)
		if err != nil {
			f.errLog.Log(f.logger, slog.LevelWarn, "cluster: cannot listen to the change feed; polling", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		f.listening.Store(true)
		for {
			if err := l.Wait(ctx); err != nil {
				break
			}
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		f.listening.Store(false)
		l.Close()
	}
}

func (f *Feed) run(ctx context.Context, wake <-chan struct{}) {
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	lastPrune := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-tick.C:
		}
		f.catchUp(ctx)
		if time.Since(lastPrune) > time.Minute {
			lastPrune = time.Now()
			if err := f.db.PruneChanges(ctx, keepChanges); err != nil && ctx.Err() == nil {
				f.logger.Warn("cluster: pruning the change feed", "err", err)
			}
		}
	}
}

// catchUp reads every change after the last one read and hands those of
// other nodes to their subscribers; after a stale spell it resets every
// cache instead, since changes may have been pruned unread.
func (f *Feed) catchUp(ctx context.Context) {
	stale := !f.Trusted()
	const page = 1000
	var rows []store.ChangeRow
	for {
		batch, err := f.db.ChangesSince(ctx, f.last, page)
		if err != nil {
			if ctx.Err() == nil {
				f.errLog.Log(f.logger, slog.LevelError, "cluster: cannot read the change feed; caches are not trusted until it can", "err", err)
			}
			return
		}
		if len(batch) > 0 {
			f.last = batch[len(batch)-1].Seq
		}
		if !stale {
			rows = append(rows, batch...)
		}
		if len(batch) < page {
			break
		}
	}
	f.mu.Lock()
	subs, prefixes, resets := f.subs, f.prefixes, f.resets
	f.mu.Unlock()
	if stale {
		f.logger.Warn("cluster: the change feed caught up after a gap; reloading every cache")
		for _, fn := range resets {
			fn()
		}
	} else {
		origin := f.db.Origin()
		for _, r := range rows {
			if r.Origin == origin {
				continue
			}
			for _, fn := range subs[r.Topic] {
				fn(r.Key)
			}
			for p, fns := range prefixes {
				if strings.HasPrefix(r.Topic, p) {
					for _, fn := range fns {
						fn(r.Topic, r.Key)
					}
				}
			}
		}
	}
	f.lastOK.Store(time.Now().UnixNano())
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
