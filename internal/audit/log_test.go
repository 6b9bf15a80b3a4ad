package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

const acct = "0123456789abcdef0123456789abcdef"

func newLog(t *testing.T) (*Log, *store.DB) {
	t.Helper()
	db := storetest.Open(t)
	l, err := New(context.Background(), db, clock.NewFake(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close(); db.Close() })
	return l, db
}

func keyTarget(id string) Target {
	return Target{ID: "crn:v1:bluemix:public:kms:us-south:a/" + acct + ":inst:key:" + id, TypeURI: "kms/secrets"}
}

func TestAppendCommitsWithItsTransactionOnly(t *testing.T) {
	l, db := newLog(t)
	ctx := auth.WithPrincipal(context.Background(), &auth.Principal{IAMID: "IBMid-1", AccountID: acct, Type: auth.User, CredentialType: "token"})
	if err := db.Tx(ctx, func(tx *store.Tx) error {
		return l.Append(tx, NewEvent(ctx, "kms.secrets.create", keyTarget("k1"), Success, 201))
	}); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	db.Tx(ctx, func(tx *store.Tx) error {
		if err := l.Append(tx, NewEvent(ctx, "kms.secrets.delete", keyTarget("k1"), Success, 204)); err != nil {
			return err
		}
		return boom
	})
	page, err := l.Query(ctx, Filter{AccountID: acct})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 1 || page.Events[0].Action != "kms.secrets.create" {
		t.Fatalf("events = %+v, want only the committed create", page.Events)
	}
	ev := page.Events[0]
	if ev.Initiator.ID != "IBMid-1" || ev.Initiator.Credential.Type != "token" || ev.Severity != Normal || ev.Observer.Name != "ActivityTracker" {
		t.Fatalf("event fields: %+v", ev)
	}
}

func TestRecordGroupCommitsConcurrentEventsAndQueryPagesNewestFirst(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			action := "kms.secrets.wrap"
			if i%2 == 1 {
				action = "kms.secrets.unwrap"
			}
			if err := l.Record(ctx, NewEvent(ctx, action, keyTarget(fmt.Sprint(i%4)), Success, 200)); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	seen := map[string]bool{}
	f := Filter{AccountID: acct, Action: "kms.secrets.unwrap", Limit: 30}
	for pages := 0; ; pages++ {
		page, err := l.Query(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range page.Events {
			if ev.Action != "kms.secrets.unwrap" || seen[ev.ID] {
				t.Fatalf("unexpected or repeated event %+v", ev)
			}
			seen[ev.ID] = true
		}
		if page.Next == "" {
			break
		}
		f.Start = page.Next
	}
	if len(seen) != 100 {
		t.Fatalf("paged through %d unwrap events, want 100", len(seen))
	}
	page, _ := l.Query(ctx, Filter{AccountID: acct, Action: "kms.secrets.*", Target: keyTarget("1").ID})
	if len(page.Events) != 50 {
		t.Fatalf("prefix+target filter found %d, want 50", len(page.Events))
	}
	other, _ := l.Query(ctx, Filter{AccountID: "someone-else"})
	if len(other.Events) != 0 {
		t.Fatal("another account sees this account's events")
	}
}

func TestFollowDeliversEveryNewEventInOrder(t *testing.T) {
	l, _ := newLog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l.Record(ctx, NewEvent(ctx, "kms.secrets.read", keyTarget("old"), Success, 200))
	events, err := l.Follow(ctx, Filter{AccountID: acct, Outcome: Failure})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		outcome := Failure
		if i%2 == 0 {
			outcome = Success
		}
		l.Record(ctx, NewEvent(ctx, "kms.secrets.wrap", keyTarget(fmt.Sprint(i)), outcome, 200))
	}
	for i := 1; i < 20; i += 2 {
		select {
		case ev := <-events:
			if ev.Target.ID != keyTarget(fmt.Sprint(i)).ID || ev.Outcome != Failure {
				t.Fatalf("followed event %d: %+v", i, ev)
			}
		case <-ctx.Done():
			t.Fatalf("follow stopped before event %d", i)
		}
	}
}

func TestSeverityFollowsActivityTrackerRules(t *testing.T) {
	for _, tc := range []struct {
		action string
		code   int
		want   string
	}{
		{"kms.secrets.delete", 204, Critical},
		{"kms.secrets.rotate", 204, Warning},
		{"kms.secrets.wrap", 200, Normal},
		{"kms.secrets.wrap", 403, Critical},
		{"kms.secrets.create", 409, Warning},
	} {
		if got := SeverityFor(tc.action, tc.code); got != tc.want {
			t.Errorf("%s %d: %s, want %s", tc.action, tc.code, got, tc.want)
		}
	}
}

func TestStoredEventsReadBackUnchanged(t *testing.T) {
	l, db := newLog(t)
	ctx := benchContext()
	typical := wrapEvent(ctx)
	unusual := NewEvent(context.Background(), "iam-identity.apikey.login", Target{ID: "not-a-crn", Name: "k"}, Failure, 401)
	unusual.Message = ""
	unusual.Observer.Name = "Elsewhere"
	unusual.Reason.ReasonType = "Custom"
	unusual.Reason.ReasonForFailure = "expired"
	unusual.Initiator.AuthnID = "other-id"
	unusual.Initiator.AuthnName = "other-name"
	unusual.Initiator.Host = Host{Address: "::1", AddressType: "IPv4"}
	unusual.EventTime = "2026-01-02T03:04:05.00+0000"
	unusual.DataEvent = true
	unusual.SaveServiceCopy = false
	unusual.LogSourceCRN = "crn:v1:bluemix:public:atracker:global:a/x::"
	unusual.Account = acct
	for _, ev := range []*Event{typical, unusual} {
		want := *ev
		if err := l.Record(ctx, ev); err != nil {
			t.Fatal(err)
		}
		want.ID, want.EventTime, want.Account = ev.ID, ev.EventTime, ""
		page, err := l.Query(ctx, Filter{AccountID: acct, Limit: 1})
		if err != nil || len(page.Events) != 1 {
			t.Fatalf("query: %v %+v", err, page)
		}
		got, _ := json.Marshal(page.Events[0])
		wantJSON, _ := json.Marshal(want)
		if string(got) != string(wantJSON) {
			t.Errorf("read back\n%s\nwant\n%s", got, wantJSON)
		}
	}
	// Rows written before the compact body hold the whole event.
	legacy := wrapEvent(ctx)
	legacy.ID, legacy.EventTime = "legacy-1", "2026-11-27T09:00:00.00+0000"
	body := insertWholeEventRow(t, db, legacy)
	page, err := l.Query(ctx, Filter{AccountID: acct, Limit: 1})
	if err != nil || len(page.Events) != 1 {
		t.Fatalf("query: %v %+v", err, page)
	}
	if got, _ := json.Marshal(page.Events[0]); string(got) != string(body) {
		t.Errorf("legacy row read back\n%s\nwant\n%s", got, body)
	}
}

func TestTargetQueryFindsEventsStoredBeforeTargetKeys(t *testing.T) {
	ctx := context.Background()
	db := storetest.Open(t)
	if err := db.Migrate(ctx, migrations[:1]); err != nil {
		t.Fatal(err)
	}
	old := wrapEvent(benchContext())
	old.ID, old.EventTime = "before-0002", "2026-11-27T09:00:00.00+0000"
	insertWholeEventRow(t, db, old)
	l, err := New(ctx, db, clock.Real{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Record(ctx, NewEvent(ctx, "kms.secrets.read", keyTarget("other"), Success, 200)); err != nil {
		t.Fatal(err)
	}
	page, err := l.Query(ctx, Filter{AccountID: acct, Target: old.Target.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Events) != 1 || page.Events[0].ID != "before-0002" {
		t.Fatalf("target query found %+v, want the event stored before audit/0002", page.Events)
	}
}

// insertWholeEventRow stores ev as rows were stored before the compact
// body and the target key (audit/0001), and returns the stored body.
func insertWholeEventRow(t *testing.T, db *store.DB, ev *Event) []byte {
	t.Helper()
	body, _ := json.Marshal(ev)
	if err := db.Tx(context.Background(), func(tx *store.Tx) error {
		_, err := tx.Exec(`INSERT INTO audit_events (id, event_time, account_id, action, outcome, severity, target_id, initiator_id, correlation_id, body)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, ev.ID, store.Time(time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)), acct, ev.Action, ev.Outcome,
			ev.Severity, ev.Target.ID, ev.Initiator.ID, ev.CorrelationID, string(body))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return body
}

// After a burst the writer expects as many events per commit as callers
// waited; a lone caller then must not keep paying the wait for company that
// no longer comes.
func TestGroupCommitStopsWaitingWhenTheLoadFalls(t *testing.T) {
	l, _ := newLog(t)
	if l.journaling {
		t.Skip("the journal's writer does not wait for company: a write() costs little whatever it carries")
	}
	ctx := context.Background()
	l.peak = 16 // as after a burst of 16 concurrent callers; the writer reads it only after the first send
	for i := range 3 {
		if err := l.Record(ctx, NewEvent(ctx, "kms.secrets.wrap", keyTarget("0"), Success, 200)); err != nil {
			t.Fatal(err)
		}
		// Record returns after the writer gathered its group: no race.
		if l.peak != 1 {
			t.Fatalf("after lone call %d the writer expects groups of %d, want 1", i, l.peak)
		}
	}
	page, err := l.Query(ctx, Filter{AccountID: acct})
	if err != nil || len(page.Events) != 3 {
		t.Fatalf("stored %d events (%v), want 3", len(page.Events), err)
	}
}

// TestRecordKeepsNothingOfTheEvent: once Record returns, the caller may
// reuse its Event (the KMS keeps it on its stack) without changing what
// was recorded, its request data included.
func TestRecordKeepsNothingOfTheEvent(t *testing.T) {
	l, _ := newLog(t)
	ctx := benchContext()
	var ev Event
	for i, id := range []string{"first", "second"} {
		ev.Reset(ctx, "kms.secrets.wrap", keyTarget(id), Success, 200, map[string]any{"keyRingId": id})
		if err := l.Record(ctx, &ev); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			ev.Reset(ctx, "kms.secrets.unwrap", keyTarget("overwritten"), Failure, 500, nil)
		}
	}
	page, err := l.Query(ctx, Filter{AccountID: acct})
	if err != nil || len(page.Events) != 2 {
		t.Fatalf("%+v, %v", page, err)
	}
	for i, id := range []string{"second", "first"} { // newest first
		got := page.Events[i]
		if got.Action != "kms.secrets.wrap" || got.Outcome != Success || got.Target.ID != keyTarget(id).ID || got.RequestData["keyRingId"] != id {
			t.Fatalf("event %d = %+v", i, got)
		}
	}
}
