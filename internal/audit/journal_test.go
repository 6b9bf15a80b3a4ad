package audit

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/store"
)

const journalChildEnv = "KEYLINE_AUDIT_JOURNAL_CHILD_DIR"

// TestJournalChild is the process TestKillLosesNoRecordedEvent kills: it
// records events from 16 goroutines and prints each event's id once
// Record returned, i.e. once the call it audits could have answered.
func TestJournalChild(t *testing.T) {
	dir := os.Getenv(journalChildEnv)
	if dir == "" {
		t.Skip("run by TestKillLosesNoRecordedEvent")
	}
	ctx := userContext()
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(ctx, db, clock.Real{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				ev := NewEvent(ctx, "kms.secrets.wrap", keyTarget(fmt.Sprintf("k-%d-%d", w, i)), Success, 200)
				if err := l.Record(ctx, ev); err != nil {
					panic(err)
				}
				mu.Lock()
				fmt.Fprintf(out, "acked %s\n", ev.ID)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestKillLosesNoRecordedEvent kills (SIGKILL) a process recording events
// while its indexer has some of them in audit_events and some only in the
// journal, then opens the log again: every event whose Record returned is
// there exactly once.
func TestKillLosesNoRecordedEvent(t *testing.T) {
	if os.Getenv("KEYLINE_TEST_DATABASE_URL") != "" {
		t.Skip("the journal is SQLite's")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestJournalChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), journalChildEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The child's database, read beside it, says when some events are
	// indexed: kill it then, while it records on, so the latest are not.
	peek, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "keyline.db")+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer peek.Close()
	acked := map[string]bool{}
	lines := bufio.NewScanner(stdout)
	deadline := time.Now().Add(60 * time.Second)
	var lastPeek time.Time
	killed := false
	for lines.Scan() {
		if id, ok := strings.CutPrefix(lines.Text(), "acked "); ok {
			acked[id] = true
		}
		if killed || len(acked) < indexBatch || time.Since(lastPeek) < 20*time.Millisecond {
			continue
		}
		lastPeek = time.Now()
		var indexed int
		peek.QueryRow(`SELECT COUNT(*) FROM audit_events`).Scan(&indexed) // an error (no table yet) reads as 0
		if indexed > 0 || time.Now().After(deadline) {
			cmd.Process.Kill()
			killed = true // read on: what was printed before the kill was acknowledged
		}
	}
	cmd.Wait()
	if len(acked) < 100 {
		t.Fatalf("the child acknowledged only %d events", len(acked))
	}

	ctx := context.Background()
	db, err := store.OpenSQLite(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var before int
	if err := db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT COUNT(*) FROM audit_events`).Scan(&before)
	}); err != nil {
		t.Fatal(err)
	}
	if before == 0 || before >= len(acked) {
		t.Fatalf("the kill came at a useless moment: %d of %d acknowledged events indexed", before, len(acked))
	}
	l, err := New(ctx, db, clock.Real{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	seen := map[string]int{}
	for start := ""; ; {
		page, err := l.Query(ctx, Filter{AccountID: acct, Limit: 500, Start: start})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Events {
			seen[ev.ID]++
		}
		if start = page.Next; start == "" {
			break
		}
	}
	for id := range acked {
		if seen[id] != 1 {
			t.Fatalf("acknowledged event %s stored %d times (%d acknowledged, %d indexed before the kill)", id, seen[id], len(acked), before)
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Fatalf("event %s stored %d times", id, n)
		}
	}
	t.Logf("%d events acknowledged, %d indexed before the kill, %d stored after the restart", len(acked), before, len(seen))
}

// A journal left by a crash is indexed from where its index stopped, up to
// its last whole record; a torn record after it (a call that never
// answered) is ignored, and the file and its bookkeeping go.
func TestReplayIndexesTheJournalFromItsIndexToItsLastWholeRecord(t *testing.T) {
	ctx := userContext()
	dir, db, l := journalLog(t)
	l.Close()

	// Five events journaled, the first two indexed, then half a sixth.
	var journal []byte
	var rows [][]any
	var indexedTo int
	for i := range 6 {
		row, err := l.row(NewEvent(ctx, "kms.secrets.wrap", keyTarget(fmt.Sprint(i)), Success, 200))
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, row)
		rec := appendRecord(nil, row)
		if i == 5 {
			rec = rec[:len(rec)/2]
		}
		journal = append(journal, rec...)
		if i == 1 {
			indexedTo = len(journal)
		}
	}
	const name = journalPrefix + "crashed" + journalSuffix
	if err := os.WriteFile(filepath.Join(dir, name), journal, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := db.Tx(ctx, func(tx *store.Tx) error {
		if err := l.insertRowsTx(tx, rows[:2]); err != nil {
			return err
		}
		return markIndexed(tx, name, int64(indexedTo))
	}); err != nil {
		t.Fatal(err)
	}

	l, err := New(ctx, db, clock.Real{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	page, err := l.Query(ctx, Filter{AccountID: acct})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range page.Events {
		got = append(got, ev.ID)
	}
	var want []string
	for i := 4; i >= 0; i-- {
		want = append(want, rows[i][0].(string))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("events after the replay = %v, want the five whole ones once each, newest first: %v", got, want)
	}
	if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
		t.Fatalf("the replayed journal is still there (%v)", err)
	}
	var left int
	if err := db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT COUNT(*) FROM audit_journal WHERE name = ?`, name).Scan(&left)
	}); err != nil || left != 0 {
		t.Fatalf("audit_journal keeps %d rows for the replayed journal (%v)", left, err)
	}
}

// Recorded events of calls that answered before a state change come
// before its event, as they did when every Record committed on its own,
// even though the indexer has not run yet; a state change that rolls back
// leaves them to be indexed once.
func TestRecordedEventsPrecedeALaterStateChange(t *testing.T) {
	l, db := newLog(t)
	ctx := userContext()
	record := func(action string) {
		t.Helper()
		if err := l.Record(ctx, NewEvent(ctx, action, keyTarget("k1"), Success, 200)); err != nil {
			t.Fatal(err)
		}
	}
	appendEvent := func(action string, fail error) {
		t.Helper()
		err := db.Tx(ctx, func(tx *store.Tx) error {
			if err := l.Append(tx, NewEvent(ctx, action, keyTarget("k1"), Success, 200)); err != nil {
				return err
			}
			return fail
		})
		if err != fail {
			t.Fatal(err)
		}
	}
	record("kms.secrets.wrap")
	record("kms.secrets.unwrap")
	appendEvent("kms.secrets.rotate", nil)
	record("kms.secrets.wrap")
	appendEvent("kms.secrets.disable", errors.New("rolled back"))
	record("kms.secrets.read")
	appendEvent("kms.secrets.enable", nil)
	record("kms.secrets.unwrap")
	page, err := l.Query(ctx, Filter{AccountID: acct})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range page.Events {
		got = append(got, strings.TrimPrefix(ev.Action, "kms.secrets."))
	}
	if want := "unwrap enable read wrap rotate unwrap wrap"; strings.Join(got, " ") != want {
		t.Fatalf("events, newest first = %v, want %s", got, want)
	}
}

// journalLog opens a Log on SQLite in a directory of its own (the journal
// is SQLite's), closed with its database when the test ends.
func journalLog(t *testing.T) (string, *store.DB, *Log) {
	t.Helper()
	if os.Getenv("KEYLINE_TEST_DATABASE_URL") != "" {
		t.Skip("the journal is SQLite's")
	}
	dir := t.TempDir()
	db, err := store.OpenSQLite(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	l, err := New(context.Background(), db, clock.Real{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return dir, db, l
}

// userContext is a call's context with a user principal of acct.
func userContext() context.Context {
	return auth.WithPrincipal(context.Background(), &auth.Principal{IAMID: "IBMid-1", AccountID: acct, Type: auth.User, CredentialType: "token"})
}

// A full journal is retired for a new one; once its events are indexed it
// is removed with its bookkeeping, and a clean close leaves no journal.
func TestFullJournalsAreReplacedAndRemovedOnceIndexed(t *testing.T) {
	ctx := userContext()
	dir, db, l := journalLog(t)
	l.rotateAt = 4 << 10 // set before the first Record: the writer reads it after
	first := l.j.name
	const events = 200
	for i := range events {
		if err := l.Record(ctx, NewEvent(ctx, "kms.secrets.wrap", keyTarget(fmt.Sprint(i)), Success, 200)); err != nil {
			t.Fatal(err)
		}
		if i%20 == 19 { // state changes index what is queued, across journals
			if err := db.Tx(ctx, func(tx *store.Tx) error {
				return l.Append(tx, NewEvent(ctx, "kms.secrets.rotate", keyTarget(fmt.Sprint(i)), Success, 200))
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	page, err := l.Query(ctx, Filter{AccountID: acct, Limit: 500})
	if err != nil || len(page.Events) != events+events/20 {
		t.Fatalf("stored %d events (%v), want %d", len(page.Events), err, events+events/20)
	}
	ids := map[string]bool{}
	for _, ev := range page.Events {
		if ids[ev.ID] {
			t.Fatalf("event %s stored twice", ev.ID)
		}
		ids[ev.ID] = true
	}
	// A state change's transaction may have indexed the full journal's
	// last events itself; the indexer removes the journal at its next
	// commit, so wait for that rather than race it.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		_, err := os.Stat(filepath.Join(dir, first))
		if os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the first, full journal is still there 10 s after its events were indexed (%v)", err)
		}
	}
	l.Close()
	if left, _ := filepath.Glob(filepath.Join(dir, journalPrefix+"*")); len(left) != 0 {
		t.Fatalf("journals left after a clean close: %v", left)
	}
	var rows int
	if err := db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT COUNT(*) FROM audit_journal`).Scan(&rows)
	}); err != nil || rows != 0 {
		t.Fatalf("audit_journal keeps %d rows after a clean close (%v)", rows, err)
	}
}
