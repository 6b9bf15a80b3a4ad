package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Heartbeats.
const (
	// HeartbeatInterval is how often a node records that it is alive.
	HeartbeatInterval = 2 * time.Second
	// LiveWithin is how recent a node's heartbeat must be for it to be
	// listed as live.
	LiveWithin = 5 * HeartbeatInterval
)

var migrations = []store.Migration{{ID: "cluster/0001", SQL: `
CREATE TABLE cluster_nodes (
	node_id      TEXT PRIMARY KEY,
	url          TEXT NOT NULL,
	started_at   TEXT NOT NULL,
	heartbeat_at TEXT NOT NULL,
	sealed       INTEGER NOT NULL,
	feed_trusted INTEGER NOT NULL
)`}, leaseMigration}

var nodeIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// NodeID returns this node's id: flag when given (checked), else the id kept
// in dataDir/node-id, created at random on the first start, so a node keeps
// its id across restarts.
func NodeID(dataDir, flag string) (string, error) {
	if flag != "" {
		if !nodeIDPattern.MatchString(flag) {
			return "", fmt.Errorf("node id %q: use 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit", flag)
		}
		return flag, nil
	}
	path := filepath.Join(dataDir, "node-id")
	if b, err := os.ReadFile(path); err == nil {
		id := strings.TrimSpace(string(b))
		if !nodeIDPattern.MatchString(id) {
			return "", fmt.Errorf("%s does not hold a node id; remove it or give --node-id", path)
		}
		return id, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	id := "node-" + hex.EncodeToString(b[:])
	if err := os.WriteFile(path, []byte(id+"\n"), 0o600); err != nil {
		return "", err
	}
	return id, nil
}

// Node is one node of the cluster, as GET /v1/cluster/nodes lists it.
type Node struct {
	ID          string    `json:"id"`
	URL         string    `json:"url"`
	StartedAt   time.Time `json:"started_at"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
	Sealed      bool      `json:"sealed"`
	// FeedTrusted says whether the node's caches were up to date with the
	// change feed at its last heartbeat.
	FeedTrusted bool `json:"feed_trusted"`
	Self        bool `json:"self"`
	// Leases are the leases the node holds (SchedulersLease).
	Leases []string `json:"leases"`
}

// Membership records this node's heartbeats and lists the live nodes.
type Membership struct {
	db      *store.DB
	id, url string
	started time.Time
	sealed  func() bool
	trusted func() bool
	logger  *slog.Logger

	mu     sync.Mutex
	leases []string // names of the leases made by Lease (listed on SQLite)
}

// Join records this node in the database (its id, the URL it serves, its
// seal state and feed health, read at each heartbeat from sealed and
// trusted) and keeps it there until ctx ends.
func Join(ctx context.Context, db *store.DB, id, url string, sealed, trusted func() bool, logger *slog.Logger) (*Membership, error) {
	if err := db.Migrate(ctx, migrations); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	m := &Membership{db: db, id: id, url: url, started: time.Now().UTC(), sealed: sealed, trusted: trusted, logger: logger}
	if err := m.Beat(ctx); err != nil {
		return nil, err
	}
	go func() {
		t := time.NewTicker(HeartbeatInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := m.Beat(ctx); err != nil && ctx.Err() == nil {
					m.logger.Warn("cluster: heartbeat", "err", err)
				}
			}
		}
	}()
	return m, nil
}

// ID is this node's id.
func (m *Membership) ID() string { return m.id }

// Beat records now that this node is alive, with its seal state and feed
// health (it also runs every HeartbeatInterval).
func (m *Membership) Beat(ctx context.Context) error {
	now := store.Time(time.Now())
	return m.db.TxNoSync(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`INSERT INTO cluster_nodes (node_id, url, started_at, heartbeat_at, sealed, feed_trusted) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (node_id) DO UPDATE SET url = excluded.url, started_at = excluded.started_at,
			heartbeat_at = excluded.heartbeat_at, sealed = excluded.sealed, feed_trusted = excluded.feed_trusted`,
			m.id, m.url, store.Time(m.started), now, m.sealed(), m.trusted())
		return err
	})
}

// Live lists the nodes whose last heartbeat is within LiveWithin, by id.
func (m *Membership) Live(ctx context.Context) ([]Node, error) {
	const op = "cluster.Nodes"
	since := store.Time(time.Now().Add(-LiveWithin))
	nodes := []Node{}
	err := m.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT node_id, url, started_at, heartbeat_at, sealed, feed_trusted FROM cluster_nodes WHERE heartbeat_at >= ? ORDER BY node_id`, since)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var n Node
			var started, beat string
			var sealed, trusted int64
			if err := rows.Scan(&n.ID, &n.URL, &started, &beat, &sealed, &trusted); err != nil {
				return err
			}
			n.StartedAt, n.HeartbeatAt = store.ParseTime(started), store.ParseTime(beat)
			n.Sealed, n.FeedTrusted, n.Self = sealed != 0, trusted != 0, n.ID == m.id
			n.Leases = []string{}
			nodes = append(nodes, n)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if !m.db.Shared() {
			// The only process holds every lease.
			m.mu.Lock()
			defer m.mu.Unlock()
			for i := range nodes {
				if nodes[i].Self {
					nodes[i].Leases = append(nodes[i].Leases, m.leases...)
				}
			}
			return nil
		}
		return m.listLeases(tx, nodes)
	})
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	return nodes, nil
}

// listLeases adds to nodes the leases each holds and has not let lapse.
func (m *Membership) listLeases(tx *store.Tx, nodes []Node) error {
	rows, err := tx.Query(`SELECT name, owner FROM cluster_leases WHERE expires_at > ? ORDER BY name`, store.Time(time.Now()))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var name, owner string
		if err := rows.Scan(&name, &owner); err != nil {
			return err
		}
		for i := range nodes {
			if owner == nodes[i].ID+"@"+store.Time(nodes[i].StartedAt) {
				nodes[i].Leases = append(nodes[i].Leases, name)
			}
		}
	}
	return rows.Err()
}
