package cluster

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Lease timings: a lease is renewed every LeaseRenew and lapses LeaseTTL
// after its last renewal, so when its holder is killed another node holds
// it within LeaseTTL+LeaseRenew (10 s).
const (
	LeaseRenew = 2 * time.Second
	LeaseTTL   = 4 * LeaseRenew
)

// SchedulersLease is the lease under which one node runs the background
// work of the whole cluster: the KMS's rotations, expiries and purges, the
// controller's reclamations and task takeovers, the backup schedule and the
// key-event loop of deployments.
const SchedulersLease = "schedulers"

var leaseMigration = store.Migration{ID: "cluster/0002", SQL: `
CREATE TABLE cluster_leases (
	name       TEXT PRIMARY KEY,
	node_id    TEXT NOT NULL,
	owner      TEXT NOT NULL,
	fence      INTEGER NOT NULL,
	expires_at TEXT NOT NULL
)`}

// Lease is a named right, held by one process of the cluster at a time, to
// do some work. Each change of holder increments its fencing number; a
// write made under the lease checks, in its own transaction, that this
// process still holds it with the same number (Guard), so a holder that was
// paused past its lease cannot commit after another one took over. On
// SQLite (one process) the lease is always held and checks nothing.
type Lease struct {
	name string
	m    *Membership
	opts LeaseOptions

	mu    sync.Mutex
	fence int64     // 0 when not held
	until time.Time // when this process stops counting on it (monotonic)
}

// LeaseOptions are a lease's timings and how eagerly this process takes it.
type LeaseOptions struct {
	// Renew is how often the holder renews the lease and TTL how long it
	// lasts after a renewal (defaults LeaseRenew and LeaseTTL).
	Renew, TTL time.Duration
	// Defer, when set, is how long past its lapse this process leaves the
	// lease to others before taking it (0: at once), given the node that
	// held it last; it is asked at each try while this process does not
	// hold the lease. A lease nobody ever held is taken at once.
	Defer func(lastHolder string) time.Duration
}

// Lease returns the lease called name, not held until Run acquires it.
func (m *Membership) Lease(name string) *Lease { return m.LeaseWith(name, LeaseOptions{}) }

// LeaseWith returns the lease called name with its own timings.
func (m *Membership) LeaseWith(name string, opts LeaseOptions) *Lease {
	if opts.Renew <= 0 {
		opts.Renew = LeaseRenew
	}
	if opts.TTL <= opts.Renew {
		opts.TTL = max(LeaseTTL, 2*opts.Renew)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.db.Shared() && !slices.Contains(m.leases, name) {
		m.leases = append(m.leases, name)
	}
	return &Lease{name: name, m: m, opts: opts}
}

// Holder is the node id of the process holding the lease called name now
// ("" when it has lapsed or nobody took it). On SQLite it is this node.
func (m *Membership) Holder(ctx context.Context, name string) (string, error) {
	if !m.db.Shared() {
		return m.id, nil
	}
	var node string
	err := m.db.Read(ctx, func(tx *store.Tx) error {
		err := tx.QueryRow(`SELECT node_id FROM cluster_leases WHERE name = ? AND expires_at > ?`, name, store.Time(time.Now())).Scan(&node)
		if store.IsNoRows(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return "", errs.Internalf("cluster.Holder", err)
	}
	return node, nil
}

// Owner names this process among the cluster's: the node id and its start
// time, so that the work of a node restarted under the same id is not taken
// for the new process's.
func (m *Membership) Owner() string { return m.id + "@" + store.Time(m.started) }

// OwnerLive says, inside tx, whether owner (a Membership.Owner) is a live
// process: its node's heartbeat is recent and the node has not restarted
// since. On SQLite only this process is live.
func (m *Membership) OwnerLive(tx *store.Tx, owner string) (bool, error) {
	if !m.db.Shared() {
		return owner == m.Owner(), nil
	}
	var n int
	err := tx.QueryRow(`SELECT COUNT(*) FROM cluster_nodes WHERE node_id || '@' || started_at = ? AND heartbeat_at >= ?`,
		owner, store.Time(time.Now().Add(-LiveWithin))).Scan(&n)
	return n > 0, err
}

// Name is the lease's name.
func (l *Lease) Name() string { return l.name }

// Held says whether this process holds the lease now.
func (l *Lease) Held() bool {
	if !l.m.db.Shared() {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fence != 0 && time.Now().Before(l.until)
}

// Fence is the lease's fencing number while this process holds it, else 0.
func (l *Lease) Fence() int64 {
	if !l.m.db.Shared() {
		return 1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Now().Before(l.until) {
		return l.fence
	}
	return 0
}

// ErrLeaseLost is the kind of error Guard returns.
func errLeaseLost(name string) error {
	return errs.Ef("cluster.Lease", errs.Conflict, "LEASE_LOST", "this node no longer holds the %s lease", name)
}

// Guard checks, in tx, that this process still holds the lease with the
// fencing number it acquired it with: run it in every transaction of work
// done under the lease (store.WithGuard does), so that it commits only
// while the lease is this process's.
func (l *Lease) Guard(tx *store.Tx) error {
	if !l.m.db.Shared() {
		return nil
	}
	fence := l.Fence()
	if fence == 0 {
		return errLeaseLost(l.name)
	}
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM cluster_leases WHERE name = ? AND owner = ? AND fence = ? AND expires_at > ?`,
		l.name, l.m.Owner(), fence, store.Time(time.Now())).Scan(&n); err != nil {
		return errs.Internalf("cluster.Lease", err)
	}
	if n == 0 {
		return errLeaseLost(l.name)
	}
	return nil
}

// renew acquires the lease when it is free or has lapsed, or extends it
// when this process holds it, and says whether it does.
func (l *Lease) renew(ctx context.Context) (bool, error) {
	start := time.Now()
	owner := l.m.Owner()
	l.mu.Lock()
	mine := l.fence
	l.mu.Unlock()
	var deferBy time.Duration
	if mine == 0 {
		// A lease held by another process is read, not written: every
		// node may try each lease at every renewal, and a write takes the
		// writers' lock.
		taken := false
		err := l.m.db.Read(ctx, func(tx *store.Tx) error {
			var holder, expires string
			err := tx.QueryRow(`SELECT node_id, expires_at FROM cluster_leases WHERE name = ?`, l.name).Scan(&holder, &expires)
			if store.IsNoRows(err) {
				return nil
			}
			if err == nil && l.opts.Defer != nil {
				deferBy = l.opts.Defer(holder)
			}
			taken = err == nil && expires > store.Time(start.Add(-deferBy))
			return err
		})
		if err != nil || taken {
			return false, err
		}
	}
	var fence int64
	err := l.m.db.Tx(ctx, func(tx *store.Tx) error {
		fence = 0
		var holder string
		var current int64
		var expires string
		err := tx.QueryRow(`SELECT owner, fence, expires_at FROM cluster_leases WHERE name = ?`, l.name).Scan(&holder, &current, &expires)
		until := store.Time(start.Add(l.opts.TTL))
		switch {
		case store.IsNoRows(err):
			fence = 1
			_, err = tx.Exec(`INSERT INTO cluster_leases (name, node_id, owner, fence, expires_at) VALUES (?, ?, ?, ?, ?)`,
				l.name, l.m.id, owner, fence, until)
			return err
		case err != nil:
			return err
		case holder == owner && current == mine:
			fence = current
		case expires > store.Time(start.Add(-deferBy)):
			return nil // another process holds it, or may take it first
		default:
			// Lapsed, or released: a new holder, a new fencing number.
			fence = current + 1
		}
		_, err = tx.Exec(`UPDATE cluster_leases SET node_id = ?, owner = ?, fence = ?, expires_at = ? WHERE name = ?`,
			l.m.id, owner, fence, until, l.name)
		return err
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		// Keep counting on the lease until it would lapse; Guard refuses
		// writes if another process took it meanwhile.
		return l.fence != 0 && time.Now().Before(l.until), err
	}
	l.fence = fence
	// Count on it one renewal less than it lasts: the clocks of this
	// process and of the next holder may differ a little.
	l.until = start.Add(l.opts.TTL - l.opts.Renew)
	return fence != 0, nil
}

// TryAcquire acquires the lease now if it is free (or renews it if this
// process holds it) and says whether this process holds it: for work that
// must start under the lease before Run's first renewal.
func (l *Lease) TryAcquire(ctx context.Context) (bool, error) {
	if !l.m.db.Shared() {
		return true, nil
	}
	return l.renew(ctx)
}

// release gives the lease up, so another node takes it at its next renewal
// rather than after LeaseTTL.
func (l *Lease) release(ctx context.Context) {
	l.mu.Lock()
	fence := l.fence
	l.fence = 0
	l.mu.Unlock()
	if fence == 0 {
		return
	}
	err := l.m.db.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`UPDATE cluster_leases SET expires_at = ? WHERE name = ? AND owner = ? AND fence = ?`,
			store.Time(time.Unix(0, 0)), l.name, l.m.Owner(), fence)
		return err
	})
	if err != nil {
		l.m.logger.Warn("cluster: cannot release a lease", "lease", l.name, "err", err)
	}
}

// Run keeps trying to hold the lease until ctx ends, and runs work while it
// does: each function starts when the lease is acquired, with a context
// that carries the lease's Guard (store.WithGuard) and ends when the lease
// is lost; they start again when it is acquired again. When ctx ends, Run
// stops the work, releases the lease and returns.
func (l *Lease) Run(ctx context.Context, work ...func(context.Context) error) {
	var stop context.CancelFunc
	var wg sync.WaitGroup
	halt := func() {
		if stop != nil {
			stop()
			wg.Wait()
			stop = nil
		}
	}
	t := time.NewTicker(l.opts.Renew)
	defer t.Stop()
	for {
		held := true
		if l.m.db.Shared() {
			var err error
			if held, err = l.renew(ctx); err != nil && ctx.Err() == nil {
				l.m.logger.Warn("cluster: cannot renew a lease", "lease", l.name, "err", err)
			}
		}
		switch {
		case held && stop == nil:
			l.m.logger.Info("cluster: holding a lease", "lease", l.name, "fence", l.Fence())
			wctx, cancel := context.WithCancel(store.WithGuard(ctx, l.Guard))
			stop = cancel
			for _, fn := range work {
				wg.Add(1)
				go func() {
					defer wg.Done()
					fn(wctx)
				}()
			}
		case !held && stop != nil:
			l.m.logger.Warn("cluster: lost a lease", "lease", l.name)
			halt()
		}
		select {
		case <-ctx.Done():
			halt()
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			l.release(rctx)
			cancel()
			return
		case <-t.C:
		}
	}
}
