package audit

import (
	"context"
	"database/sql"
	"fmt"
	"hash/fnv"
	"log/slog"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

var migrations = []store.Migration{{ID: "audit/0001", SQL: `
CREATE TABLE audit_events (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	id TEXT NOT NULL,
	event_time TEXT NOT NULL,
	account_id TEXT NOT NULL,
	action TEXT NOT NULL,
	outcome TEXT NOT NULL,
	severity TEXT NOT NULL,
	target_id TEXT NOT NULL,
	initiator_id TEXT NOT NULL,
	correlation_id TEXT NOT NULL,
	body TEXT NOT NULL
);
CREATE INDEX audit_events_account ON audit_events(account_id, seq);
CREATE INDEX audit_events_target ON audit_events(account_id, target_id, seq)`}, {
	// The target index holds a 64-bit hash of the target CRN rather than
	// the CRN itself (about 50 bytes an entry instead of 170): every group
	// commit writes its pages, and queries compare the CRN on the rows.
	ID: "audit/0002", SQL: `
ALTER TABLE audit_events ADD COLUMN target_key INTEGER NOT NULL DEFAULT 0;
DROP INDEX audit_events_target;
CREATE INDEX audit_events_target_key ON audit_events(account_id, target_key, seq)`,
	Func: fillTargetKeys,
}, journalMigration}

// targetKey is the hash of a target CRN that the target index holds.
func targetKey(target string) int64 {
	h := fnv.New64a()
	h.Write([]byte(target))
	return int64(h.Sum64())
}

// fillTargetKeys computes the target keys of the events stored before
// audit/0002.
func fillTargetKeys(tx *store.Tx) error {
	rows, err := tx.Query(`SELECT DISTINCT target_id FROM audit_events`)
	if err != nil {
		return err
	}
	var targets []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			rows.Close()
			return err
		}
		targets = append(targets, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, t := range targets {
		if _, err := tx.Exec(`UPDATE audit_events SET target_key = ? WHERE target_id = ?`, targetKey(t), t); err != nil {
			return err
		}
	}
	return nil
}

// Log stores and serves audit events.
type Log struct {
	db     *store.DB
	clock  clock.Clock
	logger *slog.Logger

	// insertRows[i] inserts 1<<i events in one statement: a group commit
	// runs a few multi-row inserts rather than one per event.
	insertRows [insertSizes]*sql.Stmt

	batch chan pending
	// waiting counts the Record calls between queuing their event and
	// learning its fate; peak is the writer's recent high mark of it, the
	// size a group commit can expect to reach under the present load.
	waiting atomic.Int64
	peak    int
	// group is the writer's group of events: its array is reused from
	// commit to commit.
	group []pending
	stop  chan struct{}
	done  chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever events commit

	// On SQLite, Record's events go through the journal (journal.go):
	// j and jbuf are the writer's; queue holds the groups written and not
	// yet known to be indexed, retired the journals the writer left, both
	// under qmu; kick tells the indexer of a new group, flush asks it to
	// commit now, indexDone closes when it stops; journaled and indexed
	// count the events written and inserted since New.
	journaling         bool
	rotateAt           int64 // journalRotate, smaller in tests
	j                  *journal
	jbuf               []byte
	qmu                sync.Mutex
	queue              []indexItem
	retired            []*journal
	kick, flush        chan struct{}
	indexDone          chan struct{}
	journaled, indexed atomic.Int64
}

// pending is an event waiting for the group commit: its row's column
// values, built by the caller (in parallel) rather than by the one writer.
type pending struct {
	row  []any
	done chan error
}

// New opens the audit log on db and starts its group-commit writer.
func New(ctx context.Context, db *store.DB, clk clock.Clock, logger *slog.Logger) (*Log, error) {
	if err := db.Migrate(ctx, migrations); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Log{db: db, clock: clk, logger: logger, batch: make(chan pending, 1024), stop: make(chan struct{}),
		done: make(chan struct{}), changed: make(chan struct{})}
	for i := range l.insertRows {
		stmt, err := db.Prepare(ctx, insertEvents(1<<i))
		if err != nil {
			l.closeStmts()
			return nil, err
		}
		l.insertRows[i] = stmt
	}
	if dir := db.Dir(); dir != "" {
		if err := l.replayJournals(ctx, dir); err != nil {
			l.closeStmts()
			return nil, err
		}
		j, err := openJournal(dir)
		if err != nil {
			l.closeStmts()
			return nil, fmt.Errorf("opening the audit journal: %w", err)
		}
		l.j = j
		l.journaling, l.rotateAt = true, journalRotate
		l.kick = make(chan struct{}, 1)
		l.flush = make(chan struct{}, 1)
		l.indexDone = make(chan struct{})
		go l.indexer()
	}
	go l.writer()
	return l, nil
}

// Close stops the writer after flushing what was queued.
func (l *Log) Close() {
	close(l.stop)
	<-l.done
	if l.journaling {
		<-l.indexDone
	}
	l.closeStmts()
}

func (l *Log) closeStmts() {
	for _, stmt := range l.insertRows {
		if stmt != nil {
			stmt.Close()
		}
	}
}

// Append records ev inside tx, the transaction of the state change it
// describes: both commit or neither does.
func (l *Log) Append(tx *store.Tx, ev *Event) error {
	var indexed int64
	if l.journaling {
		// The recorded events of calls answered before this one first.
		var err error
		if indexed, err = l.indexQueued(tx, false); err != nil {
			return err
		}
	}
	if err := l.insert(tx, ev); err != nil {
		return err
	}
	tx.OnCommit(func() {
		l.afterIndex(indexed)
		l.notify()
	})
	tx.Changed(topicEvents, "")
	return nil
}

// Record stores ev for a call that changed no state (a read, a wrap, a
// denial). Concurrent calls share one write (group commit); Record returns
// once ev is in the operating system, so killing the process loses
// nothing. On SQLite that write is one write() to the journal (journal.go),
// synced to the disk and indexed into audit_events in large batches in the
// background; on PostgreSQL it is a transaction with synchronous_commit
// off, which the next state change's fsync carries to the disk
// (store.TxNoSync).
func (l *Log) Record(ctx context.Context, ev *Event) error {
	row, err := l.row(ev)
	if err != nil {
		return err
	}
	p := pending{row: row, done: doneChans.Get().(chan error)}
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	select {
	case l.batch <- p:
	case <-l.stop:
		return errs.E("audit.Record", errs.Unavailable, "AUDIT_CLOSED", "the audit log is closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-p.done:
		// Empty again, and the writer sends on it once: reusable.
		doneChans.Put(p.done)
		return err
	case <-ctx.Done():
		// The writer may still send: the channel is not reused.
		return ctx.Err()
	}
}

// doneChans holds Record's answer channels (buffered, one slot) for reuse.
var doneChans = sync.Pool{New: func() any { return make(chan error, 1) }}

const maxBatch = 512

func (l *Log) writer() {
	defer close(l.done)
	for {
		var first pending
		select {
		case first = <-l.batch:
		case <-l.stop:
			// Flush what is still queued, then stop.
			for {
				select {
				case p := <-l.batch:
					l.commit([]pending{p})
				default:
					return
				}
			}
		}
		group := l.gather(first)
		l.commit(group)
		clear(group) // keeps no event's row alive
		l.group = group[:0]
	}
}

// gather takes the events queued behind first. The writer is woken by
// the first event of a burst, usually before the other callers of the
// burst have queued theirs: it yields the processor while that brings more
// in, so that one commit carries many events. With nothing else to run,
// Gosched returns at once, so a lone call is not delayed.
//
// Under steady concurrent load the callers released by one commit come
// back within a fraction of a millisecond; committing the first few of
// them alone would pay a transaction's fixed cost (its begin, its index and
// sequence pages in the WAL) for a handful of events. So while the group is
// smaller than the recent peak of waiting callers, the writer waits a
// little (at most maxLinger) for the rest; not with the journal, whose
// write() costs little whatever it carries.
func (l *Log) gather(first pending) []pending {
	group := append(l.group[:0], first)
	for len(group) < maxBatch {
		select {
		case p := <-l.batch:
			group = append(group, p)
			continue
		default:
		}
		runtime.Gosched()
		if len(l.batch) == 0 {
			break
		}
	}
	want := min(l.peak, maxBatch)
	if len(group) < want && !l.journaling {
		timer := time.NewTimer(maxLinger)
	linger:
		for len(group) < want {
			select {
			case p := <-l.batch:
				group = append(group, p)
			case <-timer.C:
				// The load fell: expect no more than came.
				l.peak = len(group)
				break linger
			case <-l.stop:
				break linger
			}
		}
		timer.Stop()
	}
	l.peak = max(l.peak, int(l.waiting.Load()))
	return group
}

// maxLinger bounds how long a group commit waits for callers it expects.
const maxLinger = time.Millisecond

func (l *Log) commit(group []pending) {
	if l.journaling {
		l.writeJournal(group)
		return
	}
	rows := make([][]any, len(group))
	for i, p := range group {
		rows[i] = p.row
	}
	err := l.db.TxNoSync(context.Background(), func(tx *store.Tx) error {
		return l.insertRowsTx(tx, rows)
	})
	if err != nil {
		l.logger.Error("audit: could not store events", "count", len(group), "err", err)
	} else {
		l.notify()
	}
	for _, p := range group {
		p.done <- err
	}
}

// insertRowsTx inserts rows in tx with the prepared multi-row inserts.
func (l *Log) insertRowsTx(tx *store.Tx, rows [][]any) error {
	args := make([]any, 0, eventColumns*min(len(rows), 1<<(insertSizes-1)))
	for rest := rows; len(rest) > 0; {
		// The largest prepared size that fits what is left.
		size := insertSizes - 1
		for 1<<size > len(rest) {
			size--
		}
		args = args[:0]
		for _, row := range rest[:1<<size] {
			args = append(args, row...)
		}
		if _, err := tx.Stmt(l.insertRows[size]).ExecContext(tx.Context(), args...); err != nil {
			return errs.Internalf("audit.insert", err)
		}
		rest = rest[1<<size:]
	}
	tx.Changed(topicEvents, "")
	return nil
}

const (
	// insertSizes is how many multi-row insert statements are prepared:
	// for 1, 2, 4, ... 1<<(insertSizes-1) events.
	insertSizes  = 7
	eventColumns = 11
)

// insertEvents is the statement that inserts n events.
func insertEvents(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO audit_events (id, event_time, account_id, action, outcome, severity, target_id, target_key, initiator_id, correlation_id, body) VALUES `)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString("(?,?,?,?,?,?,?,?,?,?,?)")
	}
	return b.String()
}

func (l *Log) insert(tx *store.Tx, ev *Event) error {
	row, err := l.row(ev)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(insertEvents(1), row...); err != nil {
		return errs.Internalf("audit.insert", err)
	}
	return nil
}

// row completes ev and returns its row's column values, in the order of
// insertEvents.
func (l *Log) row(ev *Event) ([]any, error) {
	t := l.clock.Now()
	now, derivedTime := store.Time(t), formatTime(t)
	if ev.ID == "" {
		ev.ID = uuid.NewString()
	}
	if ev.EventTime == "" {
		ev.EventTime = derivedTime
	}
	if ev.Observer.Name == "" {
		ev.Observer.Name = observerName
	}
	body, err := encodeBody(ev, derivedTime)
	if err != nil {
		return nil, errs.Internalf("audit.insert", err)
	}
	return []any{ev.ID, now, accountOf(ev), ev.Action, ev.Outcome, ev.Severity, ev.Target.ID, targetKey(ev.Target.ID), ev.Initiator.ID, ev.CorrelationID, body}, nil
}

// accountOf is the account whose Activity Tracker shows the event: the
// target's account, else the initiator's.
func accountOf(ev *Event) string {
	if c, err := crn.Parse(ev.Target.ID); err == nil && c.Account() != "" {
		return c.Account()
	}
	return ev.Account
}

func (l *Log) notify() {
	l.mu.Lock()
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
}

func (l *Log) changedChan() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.changed
}

// Filter selects events of one account.
type Filter struct {
	AccountID string
	Action    string // exact, or a prefix ending in '*' ("kms.secrets.*")
	Target    string // target CRN, exact
	Outcome   string
	From, To  time.Time
	Limit     int    // default 50, at most 500
	Start     string // the cursor of the page to read (from a previous page's Next)
}

// Page is a page of events, newest first.
type Page struct {
	Events []Event `json:"events"`
	Limit  int     `json:"limit"`
	Next   string  `json:"next,omitempty"` // cursor of the next (older) page
}

func (f Filter) where() (string, []any) {
	q := []string{"account_id = ?"}
	args := []any{f.AccountID}
	if f.Action != "" {
		if prefix, ok := strings.CutSuffix(f.Action, "*"); ok {
			q = append(q, "substr(action, 1, ?) = ?")
			args = append(args, len(prefix), prefix)
		} else {
			q = append(q, "action = ?")
			args = append(args, f.Action)
		}
	}
	if f.Target != "" {
		q = append(q, "target_key = ? AND target_id = ?")
		args = append(args, targetKey(f.Target), f.Target)
	}
	if f.Outcome != "" {
		q = append(q, "outcome = ?")
		args = append(args, f.Outcome)
	}
	if !f.From.IsZero() {
		q = append(q, "event_time >= ?")
		args = append(args, store.Time(f.From))
	}
	if !f.To.IsZero() {
		q = append(q, "event_time <= ?")
		args = append(args, store.Time(f.To))
	}
	return strings.Join(q, " AND "), args
}

// Query returns one page of events matching f, newest first.
func (l *Log) Query(ctx context.Context, f Filter) (Page, error) {
	const op = "audit.Query"
	if f.Limit <= 0 {
		f.Limit = 50
	}
	if f.Limit > 500 {
		return Page{}, errs.E(op, errs.Invalid, "INVALID_QUERY_PARAM_ERR", "limit must be between 1 and 500").On("query_param", "limit")
	}
	where, args := f.where()
	if f.Start != "" {
		seq, err := strconv.ParseInt(f.Start, 10, 64)
		if err != nil || seq <= 0 {
			return Page{}, errs.E(op, errs.Invalid, "INVALID_QUERY_PARAM_ERR", "start must be the cursor of a previous page").On("query_param", "start")
		}
		where += " AND seq < ?"
		args = append(args, seq)
	}
	args = append(args, f.Limit+1)
	page := Page{Limit: f.Limit, Events: []Event{}}
	if err := l.caughtUp(ctx); err != nil {
		return Page{}, err
	}
	err := l.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT `+rowColumns+` FROM audit_events WHERE `+where+` ORDER BY seq DESC LIMIT ?`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		var lastSeq int64
		for rows.Next() {
			var r storedRow
			if err := rows.Scan(r.dest()...); err != nil {
				return err
			}
			if len(page.Events) == f.Limit {
				page.Next = strconv.FormatInt(lastSeq, 10)
				break
			}
			ev, err := r.event()
			if err != nil {
				return err
			}
			page.Events = append(page.Events, ev)
			lastSeq = r.seq
		}
		return rows.Err()
	})
	if err != nil {
		return Page{}, errs.Internalf(op, err)
	}
	return page, nil
}

// Follow sends every event matching f that commits from now on, oldest
// first, until ctx ends. It reads from the database after each commit, so a
// slow follower misses nothing.
func (l *Log) Follow(ctx context.Context, f Filter) (<-chan Event, error) {
	var last int64
	where, args := f.where()
	if err := l.caughtUp(ctx); err != nil {
		return nil, err
	}
	if err := l.db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT COALESCE(MAX(seq), 0) FROM audit_events`).Scan(&last)
	}); err != nil {
		return nil, errs.Internalf("audit.Follow", err)
	}
	out := make(chan Event, 64)
	go func() {
		defer close(out)
		for {
			changed := l.changedChan()
			var batch []Event
			err := l.db.Read(ctx, func(tx *store.Tx) error {
				rows, err := tx.Query(`SELECT `+rowColumns+` FROM audit_events WHERE `+where+` AND seq > ? ORDER BY seq LIMIT 500`, append(append([]any(nil), args...), last)...)
				if err != nil {
					return err
				}
				defer rows.Close()
				for rows.Next() {
					var r storedRow
					if err := rows.Scan(r.dest()...); err != nil {
						return err
					}
					ev, err := r.event()
					if err != nil {
						return err
					}
					last = r.seq
					batch = append(batch, ev)
				}
				return rows.Err()
			})
			if err != nil {
				if ctx.Err() == nil {
					l.logger.Error("audit: follow", "err", err)
				}
				return
			}
			for _, ev := range batch {
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
			if len(batch) == 500 {
				continue
			}
			select {
			case <-changed:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Denied records a refused call: an authorization failure is itself an
// auditable action, with the reason in the event.
func (l *Log) Denied(ctx context.Context, action string, target Target, err error) {
	e := errs.As(err)
	code := 403
	reason := "access denied"
	if e != nil {
		code = e.Kind.Status()
		reason = e.Msg
	}
	ev := NewEvent(ctx, action, target, Failure, code)
	ev.Reason.ReasonForFailure = reason
	if rerr := l.Record(ctx, ev); rerr != nil {
		l.logger.Error("audit: could not record a denial", "action", action, "err", fmt.Sprint(rerr))
	}
}
