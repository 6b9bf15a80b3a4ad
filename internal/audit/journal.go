package audit

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/durable"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// The journal is how Record makes an event durable on SQLite: the writer
// appends each group of events to an append-only file of this Log with
// one write() and answers the callers, and the indexer inserts the events
// into audit_events in large batches in the background (a SQLite commit
// costs about 100 µs whatever it carries; a write() a few). The table
// audit_journal holds, per journal file, how far its events are indexed,
// updated in the transaction that inserts them, so a restart after a
// crash (New) indexes exactly the events after that point: none is lost,
// none is stored twice. Query and Follow first wait for the indexer to
// catch up with every event written before they were called.
//
// A journal holds what audit_events holds (the CADF event, which never
// carries key material or payloads), in a 0600 file next to the database.
// Each record is: payload length (uint32 LE), CRC-32C of the payload, then
// the row's text columns, each a uvarint length and its bytes. Replay stops
// at the first torn or damaged record: a call answers only after its
// record's write() returned, so what follows is nobody's answered event.

var journalMigration = store.Migration{ID: "audit/0003", SQL: `
CREATE TABLE audit_journal (
	name TEXT PRIMARY KEY,
	indexed INTEGER NOT NULL
)`}

const (
	journalPrefix = "audit-"
	journalSuffix = ".journal"
	// journalRotate is the size at which the writer starts a new journal
	// file; the indexer removes the old one once all its events are in.
	journalRotate = 64 << 20
	// indexBatch is how many events the indexer gathers before a commit,
	// waiting at most indexLinger for them. A commit's fixed cost (~100 µs)
	// is small next to 256 rows' inserts; larger batches (1024 before)
	// only made the queued rows, the Go heap and its collection swing
	// more: at 16 callers bench/kms measured some 5% less server CPU per
	// call with 256.
	indexBatch  = 256
	indexLinger = 50 * time.Millisecond
	// journalColumns are the row's columns a record holds: all but
	// target_key (index 7), which is computed from the target.
	journalColumns = eventColumns - 1
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// journal is one open journal file, written by the Log's writer only.
type journal struct {
	dir, name string
	f         *os.File
	size      int64 // bytes written
	// broken says a failed write could not be cut back: nothing more may
	// follow it.
	broken bool
}

// openJournal creates a new journal file in dir, locked against replay
// by another Log for as long as it is open.
func openJournal(dir string) (*journal, error) {
	name := journalPrefix + uuid.NewString() + journalSuffix
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	if err := durable.SyncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	return &journal{dir: dir, name: name, f: f}, nil
}

// write appends records (whole ones) to the file. On a failed or short
// write it cuts the file back, so that a later record never follows a
// torn one; if even that fails, the journal is unusable.
func (j *journal) write(b []byte) error {
	n, err := j.f.Write(b)
	if err == nil {
		j.size += int64(n)
		return nil
	}
	if terr := j.f.Truncate(j.size); terr != nil {
		j.broken = true
		return fmt.Errorf("%w; cutting back the torn record: %w", err, terr)
	}
	return err
}

// appendRecord appends row's record to b.
func appendRecord(b []byte, row []any) []byte {
	start := len(b)
	b = append(b, 0, 0, 0, 0, 0, 0, 0, 0)
	for i, v := range row {
		if i == 7 {
			continue // target_key
		}
		s := v.(string)
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	payload := b[start+8:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(payload, crc32c))
	return b
}

// maxRecord bounds a record's length when reading: more is damage.
const maxRecord = 64 << 20

// readRecord reads the next record from r into row form; io.EOF at a clean
// end, errTorn at a torn or damaged record.
func readRecord(r *bufio.Reader, buf []byte) ([]any, []byte, int, error) {
	var head [8]byte
	if n, err := io.ReadFull(r, head[:]); err != nil {
		if err == io.EOF {
			return nil, buf, 0, io.EOF
		}
		if n > 0 || err == io.ErrUnexpectedEOF {
			return nil, buf, 0, errTorn
		}
		return nil, buf, 0, err
	}
	size := binary.LittleEndian.Uint32(head[:])
	if size > maxRecord {
		return nil, buf, 0, errTorn
	}
	buf = append(buf[:0], make([]byte, size)...)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, buf, 0, errTorn
		}
		return nil, buf, 0, err
	}
	if crc32.Checksum(buf, crc32c) != binary.LittleEndian.Uint32(head[4:]) {
		return nil, buf, 0, errTorn
	}
	row := make([]any, 0, eventColumns)
	p := buf
	for range journalColumns {
		n, k := binary.Uvarint(p)
		if k <= 0 || uint64(len(p)-k) < n {
			return nil, buf, 0, errTorn
		}
		row = append(row, string(p[k:k+int(n)]))
		p = p[k+int(n):]
		if len(row) == 7 {
			row = append(row, targetKey(row[6].(string)))
		}
	}
	if len(p) != 0 {
		return nil, buf, 0, errTorn
	}
	return row, buf, 8 + int(size), nil
}

var errTorn = errors.New("torn record")

// indexItem is one group the writer wrote: its rows, the journal they are
// in and where they end in it, and the count of events journaled since New
// up to and including them.
type indexItem struct {
	rows  [][]any
	j     *journal
	end   int64
	count int64
}

// maxUnindexed bounds the events written but not yet indexed: past it the
// writer waits for the indexer rather than let memory grow.
const maxUnindexed = 16 << 10

// writeJournal is the writer's commit on SQLite: group's records in one
// write(), the rows queued for indexing, then the callers' answers. An
// event is queued before its call answers, so any transaction that starts
// after the answer finds it (indexQueued).
func (l *Log) writeJournal(group []pending) {
backlog:
	for l.unindexed() > maxUnindexed {
		l.requestIndex()
		select {
		case <-l.changedChan():
		case <-time.After(indexLinger):
		case <-l.stop:
			break backlog // the last groups: the indexer runs until the writer is done
		}
	}
	buf := l.jbuf[:0]
	for _, p := range group {
		buf = appendRecord(buf, p.row)
	}
	l.jbuf = buf
	var err error
	if l.j.broken {
		err = errs.E("audit.Record", errs.Unavailable, "AUDIT_UNAVAILABLE", "the audit journal cannot be written")
	} else if err = l.j.write(buf); err != nil {
		l.logger.Error("audit: could not write the journal", "count", len(group), "err", err)
		err = errs.Internalf("audit.Record", err)
	}
	if err == nil {
		rows := make([][]any, len(group))
		for i, p := range group {
			rows[i] = p.row
		}
		l.qmu.Lock()
		idle := len(l.queue) == 0
		count := l.journaled.Add(int64(len(group)))
		l.queue = append(l.queue, indexItem{rows: rows, j: l.j, end: l.j.size, count: count})
		full := count-l.indexed.Load() >= indexBatch && count-int64(len(group))-l.indexed.Load() < indexBatch
		l.qmu.Unlock()
		// Wake the indexer only when it may be waiting for a first event
		// or has gathered a batch: not for every group.
		if idle || full {
			select {
			case l.kick <- struct{}{}:
			default:
			}
		}
	}
	for _, p := range group {
		p.done <- err
	}
	if err == nil && l.j.size >= l.rotateAt {
		next, err := openJournal(l.j.dir)
		if err != nil {
			// Carry on in the full one; the next group tries again.
			l.logger.Error("audit: could not start a new journal", "err", err)
			return
		}
		l.qmu.Lock()
		l.retired = append(l.retired, l.j)
		l.qmu.Unlock()
		l.j = next
		// A state change may have indexed its last events already: the
		// indexer still has to commit the retirement and remove the file.
		l.requestIndex()
	}
}

// unindexed is how many journaled events are not known to be indexed.
func (l *Log) unindexed() int64 { return l.journaled.Load() - l.indexed.Load() }

// requestIndex asks the indexer to commit what is queued now.
func (l *Log) requestIndex() {
	select {
	case l.flush <- struct{}{}:
	default:
	}
}

// indexer inserts the journal's events into audit_events in large
// batches, until the writer stops; then it indexes the rest and retires
// the last journal.
func (l *Log) indexer() {
	defer close(l.indexDone)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for stopping := false; !stopping; {
		flushed := false
		if l.unindexed() == 0 {
			// The writer kicks when it queues into an empty queue.
			select {
			case <-l.kick:
			case <-l.flush:
				flushed = true
			case <-l.done:
				stopping = true
			}
		}
		if !stopping && !flushed && l.unindexed() < indexBatch {
			timer.Reset(indexLinger)
		linger:
			for l.unindexed() < indexBatch {
				select {
				case <-l.kick:
				case <-l.flush:
					break linger
				case <-timer.C:
					break linger
				case <-l.done:
					stopping = true
					break linger
				}
			}
			timer.Stop()
		}
		if stopping {
			// The writer is done: its last journal retires with the rest.
			l.qmu.Lock()
			l.retired = append(l.retired, l.j)
			l.qmu.Unlock()
		}
		for {
			err := l.index()
			if err == nil {
				break
			}
			l.logger.Error("audit: could not index the journal", "err", err)
			if stopping {
				// The journal keeps them; the next start indexes them.
				return
			}
			select {
			case <-time.After(time.Second):
			case <-l.done:
			}
		}
	}
}

// index commits the queued events, then removes the journals the writer
// retired, which that commit made durable with all their events.
func (l *Log) index() error {
	l.qmu.Lock()
	retired, queued := l.retired, len(l.queue)
	l.qmu.Unlock()
	if queued == 0 && len(retired) == 0 {
		return nil
	}
	commit := l.db.TxNoSync
	if len(retired) > 0 {
		commit = l.db.Tx
	}
	var count int64
	if err := commit(context.Background(), func(tx *store.Tx) (err error) {
		count, err = l.indexQueued(tx, true)
		return err
	}); err != nil {
		return err
	}
	if len(retired) > 0 {
		// Out of the queue before their bookkeeping goes: a later
		// transaction would take them for events not yet indexed.
		l.qmu.Lock()
		l.prune(count)
		l.retired = l.retired[len(retired):]
		l.qmu.Unlock()
		for _, j := range retired {
			l.removeJournal(j)
		}
	}
	// Last: a query that waited for these events finds the journals gone.
	l.afterIndex(count)
	return nil
}

// indexQueued inserts, in tx, the queued events that the database does not
// yet hold, and records how far each journal is indexed. It returns the
// journaled count up to the last event tx holds, for afterIndex once tx
// committed. The indexer calls it, and so does Append before its own
// event: the events of calls answered before a state change's transaction
// come before its event. Which queued events are in is read from
// audit_journal in tx itself, so a rolled-back transaction leaves them to
// the next one and a committed one's are never inserted twice.
//
// With syncJournal, the journal reaches the disk first: the indexer's
// commits do not sync the database, so this is what carries recorded
// events to the disk within indexLinger. (Append's transaction is synced
// itself.) Order does not matter to a crash: audit_journal saying more is
// indexed than a journal holds only means the rest is in audit_events.
func (l *Log) indexQueued(tx *store.Tx, syncJournal bool) (int64, error) {
	l.qmu.Lock()
	queue := l.queue
	l.qmu.Unlock()
	if len(queue) == 0 {
		return 0, nil
	}
	indexed := map[*journal]int64{}
	var rows [][]any
	var count int64
	for _, it := range queue {
		pos, ok := indexed[it.j]
		if !ok {
			if err := tx.QueryRow(`SELECT indexed FROM audit_journal WHERE name = ?`, it.j.name).Scan(&pos); err != nil && !errors.Is(err, sql.ErrNoRows) {
				return 0, errs.Internalf("audit.index", err)
			}
		}
		if it.end > pos {
			rows = append(rows, it.rows...)
			pos = it.end
		}
		indexed[it.j] = pos
		count = it.count
	}
	if len(rows) == 0 {
		return count, nil
	}
	if syncJournal {
		for j := range indexed {
			if err := j.f.Sync(); err != nil {
				return 0, errs.Internalf("audit.index", err)
			}
		}
	}
	if err := l.insertRowsTx(tx, rows); err != nil {
		return 0, err
	}
	// A group commit of about a dozen events wrote about a dozen pages.
	tx.Weigh(len(rows) / 12)
	for j, pos := range indexed {
		if err := markIndexed(tx, j.name, pos); err != nil {
			return 0, errs.Internalf("audit.index", err)
		}
	}
	return count, nil
}

// afterIndex drops from the queue the events a committed transaction
// indexed, up to journaled count, and wakes queries and followers.
func (l *Log) afterIndex(count int64) {
	if count == 0 {
		return
	}
	l.qmu.Lock()
	l.prune(count)
	if count > l.indexed.Load() {
		l.indexed.Store(count)
	}
	l.qmu.Unlock()
	l.notify()
}

// prune drops the queued groups up to journaled count. Call with qmu held.
func (l *Log) prune(count int64) {
	n := 0
	for n < len(l.queue) && l.queue[n].count <= count {
		n++
	}
	l.queue = l.queue[n:]
}

// removeJournal removes a journal whose events are all durably indexed.
func (l *Log) removeJournal(j *journal) {
	j.f.Close()
	if err := os.Remove(filepath.Join(j.dir, j.name)); err != nil {
		l.logger.Error("audit: could not remove an indexed journal", "err", err)
		return
	}
	durable.SyncDir(j.dir)
	// Only once the file is gone: a row left by a crash here names no file.
	if err := l.forgetJournals(context.Background(), j.name); err != nil {
		l.logger.Error("audit: could not forget an indexed journal", "err", err)
	}
}

// forgetJournals deletes the audit_journal rows of removed journals.
func (l *Log) forgetJournals(ctx context.Context, names ...string) error {
	return l.db.TxNoSync(ctx, func(tx *store.Tx) error {
		for _, name := range names {
			if _, err := tx.Exec(`DELETE FROM audit_journal WHERE name = ?`, name); err != nil {
				return err
			}
		}
		return nil
	})
}

func markIndexed(tx *store.Tx, name string, end int64) error {
	_, err := tx.Exec(`INSERT INTO audit_journal (name, indexed) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET indexed = excluded.indexed`, name, end)
	return err
}

// replayJournals indexes the events of the journals in dir that no live
// Log holds (left by a crash), then removes them. It runs in New, before
// the writer starts.
func (l *Log) replayJournals(ctx context.Context, dir string) error {
	names, err := filepath.Glob(filepath.Join(dir, journalPrefix+"*"+journalSuffix))
	if err != nil {
		return err
	}
	present := map[string]bool{}
	for _, path := range names {
		name := filepath.Base(path)
		present[name] = true
		if err := l.replayJournal(ctx, dir, name); err != nil {
			return fmt.Errorf("replaying the audit journal %s: %w", name, err)
		}
	}
	// Rows of journals removed before their row was.
	var stale []string
	if err := l.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT name FROM audit_journal`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				return err
			}
			if !present[name] {
				stale = append(stale, name)
			}
		}
		return rows.Err()
	}); err != nil {
		return err
	}
	return l.forgetJournals(ctx, stale...)
}

func (l *Log) replayJournal(ctx context.Context, dir, name string) error {
	path := filepath.Join(dir, name)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil // a live Log's
		}
		return err
	}
	var pos int64
	if err := l.db.Read(ctx, func(tx *store.Tx) error {
		err := tx.QueryRow(`SELECT indexed FROM audit_journal WHERE name = ?`, name).Scan(&pos)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		return err
	}); err != nil {
		return err
	}
	if _, err := f.Seek(pos, io.SeekStart); err != nil {
		return err
	}
	r := bufio.NewReaderSize(f, 1<<20)
	var rows [][]any
	var buf []byte
	end, replayed := pos, 0
	for done := false; !done; {
		row, b, n, err := readRecord(r, buf)
		buf = b
		switch {
		case err == nil:
			rows = append(rows, row)
			end += int64(n)
		case err == io.EOF || err == errTorn:
			if err == errTorn {
				l.logger.Warn("audit: the journal ends in a torn record (an unanswered call's), ignored", "journal", name, "offset", end)
			}
			done = true
		default:
			return err
		}
		if len(rows) == indexBatch || done {
			commit := l.db.TxNoSync
			if done {
				commit = l.db.Tx // durable before the file goes
			}
			if err := commit(ctx, func(tx *store.Tx) error {
				if err := l.insertRowsTx(tx, rows); err != nil {
					return err
				}
				return markIndexed(tx, name, end)
			}); err != nil {
				return err
			}
			replayed += len(rows)
			rows = rows[:0]
		}
	}
	if replayed > 0 {
		l.logger.Info("audit: indexed the events of a journal left by a crash", "journal", name, "events", replayed)
	}
	if err := os.Remove(path); err != nil {
		return err
	}
	durable.SyncDir(dir)
	return l.forgetJournals(ctx, name)
}

// caughtUp waits until every event written to the journal before the call
// is in audit_events, so that queries and followers miss none.
func (l *Log) caughtUp(ctx context.Context) error {
	if !l.journaling {
		return nil
	}
	target := l.journaled.Load()
	for l.indexed.Load() < target {
		changed := l.changedChan()
		if l.indexed.Load() >= target {
			break
		}
		l.requestIndex()
		select {
		case <-changed:
		case <-l.indexDone:
			if l.indexed.Load() < target {
				return errs.E("audit.Query", errs.Unavailable, "AUDIT_CLOSED", "the audit log is closed")
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}
