package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/keyline/keyline/internal/errs"
)

// postgres is the PostgreSQL side of a DB: the cache of rewritten
// statements. Services run the same SQL on both backends.
type postgres struct {
	queries sync.Map     // SQLite-dialect query -> PostgreSQL query
	cached  atomic.Int64 // entries in queries

	url     string // for the change feed's own connection; never logged
	lockKey int64  // the writers' advisory lock (changes.go)
	channel string // the change feed's notification channel
	origin  string // this process in the change feed
}

// maxCachedQueries bounds the cache: services' statements are constants
// or few combinations of filters, so this is never reached unless a
// caller builds SQL from values, whose rewrites are then not kept.
const maxCachedQueries = 4096

// OpenPostgres opens the PostgreSQL database at databaseURL and creates the
// migrations table if needed. Writes are serialized on one connection per
// process, as with SQLite, and across the processes sharing the database by
// an advisory lock each write transaction takes (changes.go).
func OpenPostgres(ctx context.Context, databaseURL string) (*DB, error) {
	const op = "store.Open"
	u, err := url.Parse(databaseURL)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return nil, errs.E(op, errs.Invalid, "BAD_DATABASE_URL", "the database URL must be a postgres:// or postgresql:// URL")
	}
	// Drivers may quote the connection string they failed on.
	fail := func(err error) error {
		return fmt.Errorf("open %s: %s", Redact(databaseURL), redactErr(err, databaseURL))
	}
	// Every writer connection starts synchronous, whatever the server's
	// default: the store switches it off only for TxNoSync (setSync), so
	// a replaced connection can only be more durable than asked.
	wq := u.Query()
	wq.Set("synchronous_commit", "on")
	wu := *u
	wu.RawQuery = wq.Encode()
	w, err := sql.Open("pgx", wu.String())
	if err != nil {
		return nil, fail(err)
	}
	// One writer connection: services rely on writes being serial, as
	// they are on SQLite.
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxIdleTime(0)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fail(err)
	}
	r, err := sql.Open("pgx", databaseURL)
	if err != nil {
		w.Close()
		return nil, fail(err)
	}
	r.SetMaxOpenConns(4)
	r.SetMaxIdleConns(4)
	var schema string
	if err := w.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		w.Close()
		r.Close()
		return nil, fail(err)
	}
	pg := &postgres{url: databaseURL, origin: newOrigin()}
	pg.lockKey, pg.channel = clusterIdentity(schema)
	db := &DB{write: w, read: r, pg: pg}
	// Under the writers' lock: nodes starting together would otherwise
	// race to create the same tables.
	err = db.Tx(ctx, func(tx *Tx) error {
		for _, ddl := range []string{translateDDL(`CREATE TABLE IF NOT EXISTS schema_migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)`), changesDDL} {
			if _, err := tx.tx.ExecContext(ctx, ddl); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, fail(err)
	}
	return db, nil
}

// query returns q as the backend runs it.
func (db *DB) query(q string) string {
	if db.pg == nil {
		return q
	}
	if t, ok := db.pg.queries.Load(q); ok {
		return t.(string)
	}
	t := translatePlaceholders(q)
	if db.pg.cached.Load() < maxCachedQueries {
		if _, loaded := db.pg.queries.LoadOrStore(q, t); !loaded {
			db.pg.cached.Add(1)
		}
	}
	return t
}

// args returns the arguments as the backend takes them: services store
// booleans as 0/1 integers, which SQLite converts itself.
func (db *DB) args(args []any) []any {
	if db.pg == nil {
		return args
	}
	copied := false
	for i, a := range args {
		if b, ok := a.(bool); ok {
			if !copied { // the caller's slice stays as it was
				args, copied = append([]any(nil), args...), true
			}
			args[i] = boolInt(b)
		}
	}
	return args
}

func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// translatePlaceholders numbers the '?' placeholders of q ($1, $2, ...),
// leaving question marks inside quoted strings and identifiers alone.
func translatePlaceholders(q string) string {
	if !strings.Contains(q, "?") {
		return q
	}
	var b strings.Builder
	b.Grow(len(q) + 8)
	n := 0
	var quote byte // the quote character we are inside, or 0
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0 // a doubled quote re-enters at the next char
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// ddlRewrites turn SQLite column types into PostgreSQL's: INTEGER is
// 64-bit in SQLite (BIGINT), a rowid primary key assigns itself (an
// identity column), and TEXT compares bytewise (COLLATE "C"), which
// keyset pagination relies on.
var ddlRewrites = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`(?i)\bINTEGER\s+PRIMARY\s+KEY(\s+AUTOINCREMENT)?\b`), `BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY`},
	{regexp.MustCompile(`(?i)\bINTEGER\b`), `BIGINT`},
	{regexp.MustCompile(`(?i)\bBLOB\b`), `BYTEA`},
	{regexp.MustCompile(`(?i)\bTEXT\b`), `TEXT COLLATE "C"`},
}

var ddlTable = regexp.MustCompile(`(?i)^\s*(CREATE\s+TABLE|ALTER\s+TABLE)\b`)

// translateDDL rewrites the column types of a CREATE TABLE or ALTER TABLE
// statement for PostgreSQL, outside quoted strings; other statements are
// returned as they are.
func translateDDL(stmt string) string {
	if !ddlTable.MatchString(stmt) {
		return stmt
	}
	var b strings.Builder
	for i := 0; i < len(stmt); {
		j := strings.IndexAny(stmt[i:], `'"`)
		if j < 0 {
			b.WriteString(rewriteTypes(stmt[i:]))
			break
		}
		b.WriteString(rewriteTypes(stmt[i : i+j]))
		i += j
		end := strings.IndexByte(stmt[i+1:], stmt[i])
		if end < 0 {
			b.WriteString(stmt[i:])
			break
		}
		b.WriteString(stmt[i : i+end+2])
		i += end + 2
	}
	return b.String()
}

func rewriteTypes(s string) string {
	for _, r := range ddlRewrites {
		s = r.re.ReplaceAllString(s, r.with)
	}
	return s
}

// isPGUnique reports whether err is PostgreSQL's unique_violation.
func isPGUnique(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}

// Redact returns databaseURL with its password replaced, for messages.
func Redact(databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return "(unparsable database URL)"
	}
	return u.Redacted()
}

// redactErr is err's message with any password of databaseURL removed.
func redactErr(err error, databaseURL string) string {
	msg := err.Error()
	if u, perr := url.Parse(databaseURL); perr == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	return msg
}
