package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestScheduledBackupsFollowEachDeploymentsSchedule moves the clock: a
// deployment backs up daily by default, another every 6 hours as its
// backup_schedule parameter says, and a deployment without any key backs
// up under the server's master key. Each scheduled backup is audited as
// the deployment's own doing.
func TestScheduledBackupsFollowEachDeploymentsSchedule(t *testing.T) {
	e := start(t)
	b := newBYOK(t, e)
	daily := b.deployment("es-daily")
	frequent := b.admin.createInstance("es-6h", "messagehub", "standard", "us-south",
		map[string]any{"backup_encryption_key_crn": b.keyCRN, "backup_schedule": 6})
	plain := b.admin.createInstance("es-plain", "messagehub", "standard", "us-south", nil)
	bad := map[string]any{"name": "es-bad", "resource_id": "messagehub", "resource_plan_id": "standard", "target": "us-south",
		"parameters": map[string]any{"backup_schedule": 0.5}}
	if ce := b.admin.fails(400, "POST", "/v2/resource_instances", nil, bad); !strings.Contains(ce.Message, "backup_schedule") {
		t.Fatalf("a bad schedule: %q", ce.Message)
	}

	scheduled := func(a *api, dep map[string]any) int {
		n := 0
		for _, bk := range a.backups(dep["crn"].(string)) {
			if bk["type"] == "scheduled" && bk["status"] == "completed" && bk["is_restorable"] == true {
				n++
			}
		}
		return n
	}
	// Step the clock an hour at a time, as the scheduler sleeps at most
	// that long.
	for range 7 {
		e.advanceHour()
	}
	a := e.fresh()
	waitFor(t, 10*time.Second, "the 6-hourly deployment's first scheduled backup", func() bool { return scheduled(a, frequent) == 1 })
	if n := scheduled(a, daily); n != 0 {
		t.Fatalf("the daily deployment has %d scheduled backups after 7 hours", n)
	}
	for range 18 {
		e.advanceHour()
	}
	a = e.fresh()
	waitFor(t, 10*time.Second, "a day of scheduled backups", func() bool {
		return scheduled(a, daily) == 1 && scheduled(a, plain) == 1 && scheduled(a, frequent) == 4
	})
	for _, ev := range a.events("event-streams.backup.create", "success") {
		if ev["requestData"].(map[string]any)["type"] == "scheduled" && !strings.HasPrefix(ev["initiator"].(map[string]any)["id"].(string), "crn-crn:v1:bluemix:public:messagehub:") {
			t.Fatalf("a scheduled backup is not audited as the deployment's doing: %s", dump(ev))
		}
	}
	if bk := a.backups(plain["crn"].(string))[0]; bk["encryption_key_crn"] != nil {
		t.Fatalf("a deployment without keys names a key on its backup: %s", dump(bk))
	}
}

// advanceHour moves the clock an hour, the longest the backup scheduler
// sleeps, and waits until every loop the move woke sleeps again.
func (e *env) advanceHour() {
	e.t.Helper()
	n := e.clock.Sleepers()
	e.clock.Advance(time.Hour)
	waitFor(e.t, 10*time.Second, "the schedulers to sleep again", func() bool { return e.clock.Sleepers() >= n })
}

// TestBackupsAreKeptThirtyDays: a backup older than the retention is
// deleted, its object with it, and the deletion is audited.
func TestBackupsAreKeptThirtyDays(t *testing.T) {
	e := start(t)
	b := newBYOK(t, e)
	dep := b.deployment("es-a")
	b.admin.mustBackUp(dep["crn"].(string))
	old := b.admin.backups(dep["crn"].(string))[0]
	id := old["id"].(string)
	path := filepath.Join(e.dir, "backups", "deployments", dep["guid"].(string), id[strings.LastIndex(id, ":")+1:]+".klbackup")
	e.clock.Advance(29 * 24 * time.Hour)
	a := e.fresh()
	waitFor(t, 10*time.Second, "the day's scheduled backup", func() bool { return len(a.backups(dep["crn"].(string))) == 2 })
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("a 29-day-old backup was deleted: %v", err)
	}
	e.clock.Advance(2 * 24 * time.Hour)
	a = e.fresh()
	waitFor(t, 10*time.Second, "the 31-day-old backup to go", func() bool {
		for _, bk := range a.backups(dep["crn"].(string)) {
			if bk["id"] == id {
				return false
			}
		}
		return true
	})
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the expired backup's object is still on the volume: %v", err)
	}
	deleted := false
	for _, ev := range a.events("event-streams.backup.delete", "success") {
		deleted = deleted || ev["target"].(map[string]any)["id"] == id
	}
	if !deleted {
		t.Fatal("no audit event of the expired backup's deletion")
	}
}
