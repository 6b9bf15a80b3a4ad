// Package store keeps Keyline's metadata in a SQL database: embedded SQLite
// (pure Go, no cgo) by default, PostgreSQL when given a database URL.
// Services write portable SQL with '?' placeholders, run it in
// transactions through this package, and register versioned migrations;
// for PostgreSQL this package rewrites placeholders and column types, so
// services never know which backend they run on.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyline/keyline/internal/errs"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// DB is the metadata database. Writes go through one connection, so
// transactions never fail with SQLITE_BUSY; reads use a pool.
type DB struct {
	write *sql.DB
	read  *sql.DB

	// dir is the directory of a SQLite database ("" for PostgreSQL).
	dir string

	// pg is set for PostgreSQL: queries are rewritten (see postgres.go)
	// and SQLite's checkpointer and PRAGMAs are not used.
	pg *postgres

	// relaxed says whether the one write connection is in
	// synchronous=NORMAL (TxNoSync) rather than FULL, on PostgreSQL
	// synchronous_commit=off rather than on. Only the holder of the
	// connection reads or writes it. Switching only on a change saves a
	// statement per commit in runs of audit group commits.
	relaxed bool

	// Checkpoints (copying the WAL into the database file, then fsync) run
	// on their own connection, not in the commit that crosses SQLite's
	// threshold: there they stalled every writer behind an fsync (the p99
	// of wrap and unwrap). sinceCheckpoint counts commits (holder of the
	// write connection only); every checkpointEvery it wakes checkpointer.
	checkpoint      *sql.DB
	sinceCheckpoint int
	checkpointEvery int
	wake            chan struct{}
	stop            chan struct{}
	stopped         chan struct{}
	closeOnce       sync.Once
	// finish asks the writer to checkpoint the few frames committed while
	// the checkpointer ran: SQLite restarts the WAL from its beginning only
	// when a write starts with the log fully checkpointed, so without this
	// last step a busy database's WAL grows without bound.
	finish atomic.Bool
	// checkpoints counts the checkpointer's completed passes.
	checkpoints atomic.Int64
}

// checkpointEvery is how many commits pass between checkpoints. Audit
// group commits write about three WAL pages each, so the log grows to
// some 13,000 pages (50 MiB) between checkpoints, then SQLite reuses it
// from its start: far fewer checkpoint fsyncs than SQLite's default (1000
// pages), each rarer stall off the p99 of wrap and unwrap, and pages
// rewritten by many commits (index leaves, the table's last page) copied
// once.
const checkpointEvery = 4096

// checkpointer runs a passive checkpoint whenever woken, until Close: it
// never blocks readers or the writer.
func (db *DB) checkpointer() {
	defer close(db.stopped)
	for {
		select {
		case <-db.wake:
		case <-db.stop:
			return
		}
		if _, err := db.checkpoint.Exec(`PRAGMA wal_checkpoint(PASSIVE)`); err != nil {
			// The next wake retries; SQLite's WAL stays correct meanwhile.
			continue
		}
		db.finish.Store(true)
		db.checkpoints.Add(1)
	}
}

// Prepare compiles a statement once for the write transactions that run it
// often (Tx.Stmt). Call it outside any transaction.
func (db *DB) Prepare(ctx context.Context, query string) (*sql.Stmt, error) {
	return db.write.PrepareContext(ctx, db.query(query))
}

// Migration is one versioned schema change. ID orders migrations within a
// service ("kms/0001", "kms/0002"); once applied it never runs again.
type Migration struct {
	ID  string
	SQL string
	// Func, when set, runs after SQL in the same transaction, for data
	// changes SQL alone cannot make (values computed in Go).
	Func func(*Tx) error
}

// Open opens the metadata database: SQLite in dir when databaseURL is
// empty, else the PostgreSQL database at databaseURL (postgres:// or
// postgresql://). Errors never include the URL's password.
func Open(ctx context.Context, dir, databaseURL string) (*DB, error) {
	if databaseURL == "" {
		return OpenSQLite(ctx, dir)
	}
	return OpenPostgres(ctx, databaseURL)
}

// OpenSQLite opens (creating if needed) the database file in dir.
func OpenSQLite(ctx context.Context, dir string) (*DB, error) {
	path := filepath.Join(dir, "keyline.db")
	// Create the file owner-only first: SQLite gives its WAL and shared
	// memory files the database file's permissions.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	} else {
		f.Close()
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "wal_autocheckpoint(0)") // the checkpointer's job
	// Statement journals (a multi-row insert in a transaction that already
	// wrote the same pages) in memory, not a write() per page to a file.
	q.Add("_pragma", "temp_store(MEMORY)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Add("_txlock", "immediate")
	dsn := "file:" + path + "?" + q.Encode()
	w, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	rq := url.Values{}
	rq.Add("_pragma", "busy_timeout(10000)")
	rq.Add("_pragma", "query_only(1)")
	r, err := sql.Open("sqlite", "file:"+path+"?"+rq.Encode())
	if err != nil {
		w.Close()
		return nil, err
	}
	r.SetMaxOpenConns(4)
	cq := url.Values{}
	cq.Add("_pragma", "busy_timeout(10000)")
	c, err := sql.Open("sqlite", "file:"+path+"?"+cq.Encode())
	if err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	c.SetMaxOpenConns(1)
	db := &DB{dir: dir, write: w, read: r, checkpoint: c, checkpointEvery: checkpointEvery, wake: make(chan struct{}, 1), stop: make(chan struct{}), stopped: make(chan struct{})}
	go db.checkpointer()
	if _, err := w.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)`); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Dir is the directory of a SQLite database, where files that belong with
// the metadata (the audit journal) live; "" for PostgreSQL.
func (db *DB) Dir() string { return db.dir }

// Close closes the database.
func (db *DB) Close() error {
	if db.pg != nil {
		return errors.Join(db.read.Close(), db.write.Close())
	}
	db.closeOnce.Do(func() { close(db.stop) })
	<-db.stopped
	return errors.Join(db.read.Close(), db.checkpoint.Close(), db.write.Close())
}

// Migrate applies, in ID order, the migrations that have not run yet, each in
// its own transaction together with its bookkeeping row.
func (db *DB) Migrate(ctx context.Context, ms []Migration) error {
	sorted := append([]Migration(nil), ms...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	for _, m := range sorted {
		err := db.Tx(ctx, func(tx *Tx) error {
			var n int
			if err := tx.QueryRow(`SELECT COUNT(*) FROM schema_migrations WHERE id = ?`, m.ID).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			for _, stmt := range splitStatements(m.SQL) {
				if db.pg != nil {
					stmt = translateDDL(stmt)
				}
				if _, err := tx.Exec(stmt); err != nil {
					return fmt.Errorf("migration %s: %w", m.ID, err)
				}
			}
			if m.Func != nil {
				if err := m.Func(tx); err != nil {
					return fmt.Errorf("migration %s: %w", m.ID, err)
				}
			}
			_, err := tx.Exec(`INSERT INTO schema_migrations (id, applied_at) VALUES (?, ?)`, m.ID, time.Now().UTC().Format(time.RFC3339))
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func splitStatements(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ";") {
		if strings.TrimSpace(part) != "" {
			out = append(out, part)
		}
	}
	return out
}

// Tx runs fn in a write transaction. It commits when fn returns nil and
// rolls back otherwise; functions registered with OnCommit run after a
// successful commit.
func (db *DB) Tx(ctx context.Context, fn func(*Tx) error) error {
	return db.tx(ctx, false, fn)
}

// TxNoSync is Tx for records that must survive the process being killed
// but may wait for the next synced commit to survive a power loss: the
// commit reaches the operating system (so a kill -9 loses nothing) without
// its own fsync. SQLite's WAL is sequential, so the next Tx's fsync makes
// these commits durable too. The audit trail of calls that change no state
// uses it; every state change uses Tx.
func (db *DB) TxNoSync(ctx context.Context, fn func(*Tx) error) error {
	return db.tx(ctx, true, fn)
}

// tx runs fn on the write connection, first switching its synchronous
// mode when this transaction needs the other one.
func (db *DB) tx(ctx context.Context, relaxed bool, fn func(*Tx) error) error {
	tx, err := db.commit(ctx, relaxed, fn)
	if err != nil {
		return err
	}
	// The connection is back in the pool: OnCommit functions may start
	// transactions of their own.
	for _, f := range tx.onCommit {
		f()
	}
	return nil
}

// commit runs fn in a transaction on the write connection and commits it.
func (db *DB) commit(ctx context.Context, relaxed bool, fn func(*Tx) error) (*Tx, error) {
	conn, err := db.write.Conn(ctx)
	if err != nil {
		return nil, errs.Internalf("store.Tx", err)
	}
	defer conn.Close()
	if err := db.setSync(ctx, conn, relaxed); err != nil {
		return nil, errs.Internalf("store.Tx", err)
	}
	if db.pg == nil && db.finish.Swap(false) {
		// Best effort: on failure the next checkpoint tries again.
		conn.ExecContext(ctx, `PRAGMA wal_checkpoint(PASSIVE)`)
	}
	sqlTx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return nil, errs.Internalf("store.Tx", err)
	}
	tx := &Tx{tx: sqlTx, ctx: ctx, db: db}
	if err := db.lockWriters(tx); err != nil {
		sqlTx.Rollback()
		return nil, errs.Internalf("store.Tx", err)
	}
	if err := checkGuard(tx); err != nil {
		sqlTx.Rollback()
		return nil, err
	}
	if err := fn(tx); err != nil {
		sqlTx.Rollback()
		return nil, err
	}
	if err := db.publishChanges(tx); err != nil {
		sqlTx.Rollback()
		return nil, errs.Internalf("store.Tx", err)
	}
	if err := sqlTx.Commit(); err != nil {
		return nil, errs.Internalf("store.Tx", err)
	}
	if db.pg != nil {
		return tx, nil
	}
	if db.sinceCheckpoint += max(1, tx.weight); db.sinceCheckpoint >= db.checkpointEvery {
		db.sinceCheckpoint = 0
		select {
		case db.wake <- struct{}{}:
		default: // a checkpoint is already due
		}
	}
	return tx, nil
}

// setSync switches the write connection's commit mode when this
// transaction needs the other one. Relaxed, a commit reaches SQLite's WAL
// in the operating system, or PostgreSQL's server, without waiting for a
// flush to disk: killing Keyline loses nothing.
func (db *DB) setSync(ctx context.Context, conn *sql.Conn, relaxed bool) error {
	if db.relaxed == relaxed {
		return nil
	}
	stmt := map[bool]string{false: "PRAGMA synchronous=FULL", true: "PRAGMA synchronous=NORMAL"}[relaxed]
	if db.pg != nil {
		stmt = map[bool]string{false: "SET synchronous_commit = on", true: "SET synchronous_commit = off"}[relaxed]
	}
	if _, err := conn.ExecContext(ctx, stmt); err != nil {
		return err
	}
	db.relaxed = relaxed
	return nil
}

// Read runs fn in a read-only transaction that sees one consistent snapshot.
func (db *DB) Read(ctx context.Context, fn func(*Tx) error) error {
	opts := &sql.TxOptions{ReadOnly: true}
	if db.pg != nil {
		// PostgreSQL's default (read committed) takes a snapshot per
		// statement; SQLite's read transactions see one for their life.
		opts.Isolation = sql.LevelRepeatableRead
	}
	sqlTx, err := db.read.BeginTx(ctx, opts)
	if err != nil {
		return errs.Internalf("store.Read", err)
	}
	defer sqlTx.Rollback()
	return fn(&Tx{tx: sqlTx, ctx: ctx, db: db})
}

// Tx is a transaction in progress.
type Tx struct {
	tx       *sql.Tx
	ctx      context.Context
	db       *DB
	onCommit []func()
	changes  map[Change]struct{} // for the other nodes (PostgreSQL only)
	weight   int                 // commits this one counts as toward a checkpoint
}

// Exec runs a statement.
func (t *Tx) Exec(query string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(t.ctx, t.db.query(query), t.db.args(args)...)
}

// Query runs a query.
func (t *Tx) Query(query string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(t.ctx, t.db.query(query), t.db.args(args)...)
}

// QueryRow runs a query that returns at most one row.
func (t *Tx) QueryRow(query string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(t.ctx, t.db.query(query), t.db.args(args)...)
}

// Stmt returns a statement prepared with DB.Prepare for use in this
// transaction; on the write connection it is compiled once and reused.
func (t *Tx) Stmt(stmt *sql.Stmt) *sql.Stmt {
	return t.tx.StmtContext(t.ctx, stmt)
}

// Weigh counts this transaction as n commits toward SQLite's next WAL
// checkpoint: for a transaction that writes as many pages as n ordinary
// commits (the audit indexer's batches), so that the WAL between
// checkpoints stays about as large as checkpointEvery assumes.
func (t *Tx) Weigh(n int) { t.weight = max(t.weight, n) }

// OnCommit registers f to run once the transaction has committed (for
// notifying followers of what is now durable).
func (t *Tx) OnCommit(f func()) { t.onCommit = append(t.onCommit, f) }

// Context is the context the transaction runs under.
func (t *Tx) Context() context.Context { return t.ctx }

// IsNoRows reports whether err says a query found no row.
func IsNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// IsUnique reports whether err is a uniqueness violation.
func IsUnique(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "UNIQUE constraint failed") || isPGUnique(err))
}

// timeLayout is RFC 3339 with a fixed nine-digit fraction, so that stored
// times sort as text in time order (RFC3339Nano drops trailing zeros).
const timeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Time formats t as the database stores times: fixed-width RFC 3339, UTC.
func Time(t time.Time) string { return t.UTC().Format(timeLayout) }

// ParseTime reads a time written by Time ("" is the zero time).
func ParseTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}
