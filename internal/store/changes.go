package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Several Keyline nodes may share one PostgreSQL database. Two things make
// their writes and caches correct across processes, both here so services
// keep writing plain transactions:
//
//   - Every write transaction first takes one transaction-scoped advisory
//     lock (the writers' lock), so writers are serial across the cluster as
//     they are inside a process: a rule checked in one transaction (dual
//     authorization, one rotation per hour, a migration applied once) holds
//     on every node, and identity values (audit seq, the change feed's seq)
//     are assigned in commit order, so a reader of "seq > last" never skips
//     a row committed late.
//   - A transaction that changes what other nodes cache marks it
//     (Tx.Changed); the marks are written to keyline_changes in the same
//     transaction, with one pg_notify delivered at its commit. Other nodes
//     LISTEN and read the rows after the last one they saw (internal/cluster).
//
// On SQLite (one process) neither happens and Changed costs nothing.

// Change names something a transaction changed: a topic ("iam.policy") and
// a key within it (the policy's id; "" for the whole topic).
type Change struct {
	Topic, Key string
}

// ChangeRow is one row of the change feed.
type ChangeRow struct {
	Seq int64
	Change
	// Origin is the DB (process) that wrote it: a node skips its own
	// changes, which its commit hooks already applied.
	Origin string
}

const changesDDL = `CREATE TABLE IF NOT EXISTS keyline_changes (
	seq    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	topic  TEXT NOT NULL,
	key    TEXT NOT NULL,
	origin TEXT NOT NULL,
	at     TIMESTAMPTZ NOT NULL DEFAULT now()
)`

// clusterIdentity derives, from the schema the database URL selects, the
// writers' advisory lock key and the notification channel: test schemas in
// one database neither block nor wake each other.
func clusterIdentity(schema string) (lockKey int64, channel string) {
	h := fnv.New64a()
	h.Write([]byte("keyline/writers/" + schema))
	sum := h.Sum64()
	return int64(sum), fmt.Sprintf("keyline_changes_%016x", sum)
}

func newOrigin() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Shared says whether other processes may share this database
// (PostgreSQL): then a change feed must keep their caches true.
func (db *DB) Shared() bool { return db.pg != nil }

// Origin identifies this process's writes in the change feed.
func (db *DB) Origin() string {
	if db.pg == nil {
		return ""
	}
	return db.pg.origin
}

// Changed marks, for the other nodes sharing the database, that this
// transaction changed topic/key. Nothing is written on SQLite.
func (t *Tx) Changed(topic, key string) {
	if t.db.pg == nil {
		return
	}
	if t.changes == nil {
		t.changes = map[Change]struct{}{}
	}
	t.changes[Change{topic, key}] = struct{}{}
}

// lockWriters takes the cluster-wide writers' lock for a PostgreSQL write
// transaction; it is released by the commit or rollback.
func (db *DB) lockWriters(tx *Tx) error {
	if db.pg == nil {
		return nil
	}
	_, err := tx.tx.ExecContext(tx.ctx, `SELECT pg_advisory_xact_lock($1)`, db.pg.lockKey)
	return err
}

// publishChanges writes the transaction's marks and its notification, in
// one statement; PostgreSQL delivers the notification at commit, and only
// if it commits.
func (db *DB) publishChanges(tx *Tx) error {
	if db.pg == nil || len(tx.changes) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString(`WITH ins AS (INSERT INTO keyline_changes (topic, key, origin) VALUES `)
	args := make([]any, 0, 3*len(tx.changes)+1)
	args = append(args, db.pg.channel)
	for c := range tx.changes {
		if len(args) > 1 {
			b.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&b, "($%d, $%d, $%d)", n+1, n+2, n+3)
		args = append(args, c.Topic, c.Key, db.pg.origin)
	}
	b.WriteString(` RETURNING seq) SELECT pg_notify($1, MAX(seq)::text) FROM ins`)
	_, err := tx.tx.ExecContext(tx.ctx, b.String(), args...)
	return err
}

// ChangesSince returns at most limit changes after seq, oldest first.
func (db *DB) ChangesSince(ctx context.Context, after int64, limit int) ([]ChangeRow, error) {
	if db.pg == nil {
		return nil, nil
	}
	rows, err := db.read.QueryContext(ctx, `SELECT seq, topic, key, origin FROM keyline_changes WHERE seq > $1 ORDER BY seq LIMIT $2`, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ChangeRow
	for rows.Next() {
		var r ChangeRow
		if err := rows.Scan(&r.Seq, &r.Topic, &r.Key, &r.Origin); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// LastChange is the newest change's seq (0 when there is none).
func (db *DB) LastChange(ctx context.Context) (int64, error) {
	if db.pg == nil {
		return 0, nil
	}
	var seq int64
	err := db.read.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM keyline_changes`).Scan(&seq)
	return seq, err
}

// PruneChanges deletes the changes older than age. A node that read none
// of them for that long has long stopped trusting its caches and reloads
// them whole when it catches up.
func (db *DB) PruneChanges(ctx context.Context, age time.Duration) error {
	if db.pg == nil {
		return nil
	}
	return db.TxNoSync(ctx, func(tx *Tx) error {
		_, err := tx.tx.ExecContext(ctx, `DELETE FROM keyline_changes WHERE at < now() - make_interval(secs => $1)`, age.Seconds())
		return err
	})
}

// ChangeListener is a connection of its own LISTENing to the change feed's
// notifications.
type ChangeListener struct {
	conn *pgx.Conn
}

// ListenChanges opens a connection that listens to the change feed.
func (db *DB) ListenChanges(ctx context.Context) (*ChangeListener, error) {
	if db.pg == nil {
		return nil, fmt.Errorf("the change feed needs PostgreSQL")
	}
	conn, err := pgx.Connect(ctx, db.pg.url)
	if err != nil {
		return nil, fmt.Errorf("listen: %s", redactErr(err, db.pg.url))
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{db.pg.channel}.Sanitize()); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("listen: %s", redactErr(err, db.pg.url))
	}
	return &ChangeListener{conn: conn}, nil
}

// Wait returns when a notification arrives, the connection fails, or ctx
// ends.
func (l *ChangeListener) Wait(ctx context.Context) error {
	_, err := l.conn.WaitForNotification(ctx)
	return err
}

// Close closes the listening connection.
func (l *ChangeListener) Close() { l.conn.Close(context.Background()) }
