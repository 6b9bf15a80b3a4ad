package rcapi

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/controller"
)

// reclamationOf returns the one reclamation listed for the instance.
func (e *env) reclamationOf(guid string) map[string]any {
	e.t.Helper()
	res := e.do("alice", "GET", "/v1/reclamations?resource_instance_id="+guid+"&account_id="+accountA, nil).want(e.t, 200)
	list := res.body["resources"].([]any)
	if len(list) != 1 {
		e.t.Fatalf("%d reclamations for %s: %s", len(list), guid, res.raw)
	}
	return list[0].(map[string]any)
}

func (e *env) state(guid string) string {
	return e.do("alice", "GET", "/v2/resource_instances/"+guid, nil).want(e.t, 200).str("state")
}

func TestDeleteThenRestore(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		plan   string
		broker *recordingBroker
	}{{kmsPlan, e.kms}, {esPlan, e.es}} {
		guid := e.createInstance("x", tc.plan, nil).str("guid")
		e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, http.StatusAccepted)
		inst := e.do("alice", "GET", "/v2/resource_instances/"+guid, nil).want(t, 200)
		if inst.str("state") != "pending_reclamation" || inst.str("scheduled_reclaim_by") != "IBMid-alice" || inst.body["deleted_at"] == nil {
			t.Errorf("deleted instance: %s", inst.raw)
		}
		if tc.broker.count("Suspend", guid) != 1 {
			t.Errorf("broker not asked to suspend %s", guid)
		}
		rec := e.reclamationOf(guid)
		target, _ := time.Parse(time.RFC3339, rec["target_time"].(string))
		if rec["state"] != "SCHEDULED" || rec["entity_crn"] != inst.str("crn") || rec["resource_instance_id"] != guid ||
			rec["account_id"] != accountA || !target.Equal(epoch.Add(9*24*time.Hour)) {
			t.Errorf("reclamation: %v", rec)
		}
		// A deleted instance cannot be deleted or updated again.
		e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, http.StatusGone)
		e.do("alice", "PATCH", "/v2/resource_instances/"+guid, map[string]any{"name": "y"}).want(t, http.StatusConflict)

		restored := e.do("alice", "POST", "/v1/reclamations/"+rec["id"].(string)+"/actions/restore", map[string]any{"request_by": "alice", "comment": "oops"}).want(t, 200)
		if restored.str("state") != "RESTORED" {
			t.Errorf("restore returned %s", restored.raw)
		}
		inst = e.do("alice", "GET", "/v2/resource_instances/"+guid, nil).want(t, 200)
		if inst.str("state") != "active" || inst.body["restored_at"] == nil || inst.body["deleted_at"] != nil {
			t.Errorf("restored instance: %s", inst.raw)
		}
		if op := inst.body["last_operation"].(map[string]any); op["type"] != "reclamation" {
			t.Errorf("last_operation %v", op)
		}
		if tc.broker.count("Resume", guid) != 1 || tc.broker.count("Reclaim", guid) != 0 {
			t.Errorf("broker calls: %v", tc.broker.calls)
		}
		if n := len(e.do("alice", "GET", "/v1/reclamations", nil).body["resources"].([]any)); n != 0 {
			t.Errorf("%d reclamations still listed after restore", n)
		}
		e.do("alice", "POST", "/v1/reclamations/"+rec["id"].(string)+"/actions/restore", nil).want(t, http.StatusConflict)
	}
}

func TestDeleteThenReclaim(t *testing.T) {
	e := newEnv(t)
	guid := e.createInstance("es", esPlan, nil).str("guid")
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, http.StatusAccepted)
	id := e.reclamationOf(guid)["id"].(string)
	for _, tc := range []struct {
		token, action string
		status        int
	}{
		{"bob", "reclaim", 404},
		{"viewer", "reclaim", 403},
		{"viewer", "restore", 403},
		{"alice", "purge", 404},
	} {
		e.do(tc.token, "POST", "/v1/reclamations/"+id+"/actions/"+tc.action, nil).want(t, tc.status)
	}
	if n := len(e.do("bob", "GET", "/v1/reclamations?account_id="+accountA, nil).body["resources"].([]any)); n != 0 {
		t.Errorf("bob sees %d of alice's reclamations", n)
	}
	res := e.do("alice", "POST", "/v1/reclamations/"+id+"/actions/reclaim", map[string]any{"comment": "gone"}).want(t, 200)
	if res.str("state") != "RECLAIMED" {
		t.Errorf("reclaim returned %s", res.raw)
	}
	if got := e.state(guid); got != "removed" {
		t.Errorf("reclaimed instance is %s", got)
	}
	if e.es.count("Reclaim", guid) != 1 {
		t.Errorf("broker calls %v", e.es.calls)
	}
	e.do("alice", "POST", "/v1/reclamations/"+id+"/actions/restore", nil).want(t, http.StatusConflict)
	e.do("alice", "POST", "/v1/reclamations/"+id+"/actions/reclaim", nil).want(t, http.StatusConflict)
	if n := len(e.do("alice", "GET", "/v1/reclamations", nil).body["resources"].([]any)); n != 0 {
		t.Errorf("%d reclamations listed after reclaim", n)
	}
}

func TestExpiredReclamationIsReclaimedOnce(t *testing.T) {
	e := newEnv(t)
	guid := e.createInstance("kp", kmsPlan, nil).str("guid")
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, http.StatusAccepted)

	e.clock.Advance(9*24*time.Hour - time.Minute)
	if _, err := e.ctl.ReclaimDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := e.kms.count("Reclaim", guid); n != 0 {
		t.Fatalf("reclaimed %d times before the window ended", n)
	}
	e.clock.Advance(time.Minute)
	waitFor(t, "the scheduler to reclaim the instance", func() bool { return e.state(guid) == "removed" })
	// Later passes, and a restart, reclaim nothing more.
	e.clock.Advance(30 * 24 * time.Hour)
	e.restart()
	if _, err := e.ctl.ReclaimDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := e.kms.count("Reclaim", guid); n != 1 {
		t.Errorf("Reclaim called %d times, want once", n)
	}
}

func TestReclamationSurvivesARestart(t *testing.T) {
	e := newEnv(t)
	guid := e.createInstance("es", esPlan, nil).str("guid")
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, http.StatusAccepted)
	e.restart()
	e.clock.Advance(9 * 24 * time.Hour)
	waitFor(t, "the restarted scheduler to reclaim the instance", func() bool { return e.es.count("Reclaim", guid) == 1 })
	waitFor(t, "the instance to be removed", func() bool { return e.state(guid) == "removed" })
}

func TestFailedReclaimIsRetriedAcrossRestarts(t *testing.T) {
	e := newEnv(t)
	guid := e.createInstance("es", esPlan, nil).str("guid")
	e.es.set(func(b *recordingBroker) { b.reclaimFails = 2 })
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, http.StatusAccepted)
	id := e.reclamationOf(guid)["id"].(string)

	// Reclaimed by hand, the broker fails: the obligation stays, reclaiming.
	res := e.do("alice", "POST", "/v1/reclamations/"+id+"/actions/reclaim", nil).want(t, 200)
	props := res.body["custom_properties"].(map[string]any)
	if res.str("state") != "RECLAIMING" || props["last_error"] != "The storage of the deployment is unavailable" {
		t.Fatalf("failed reclaim returned %s", res.raw)
	}
	if got := e.state(guid); got != "pending_reclamation" {
		t.Errorf("instance is %s after a failed reclaim", got)
	}
	e.restart()
	// The retry after a minute fails too; the next one, two minutes later, succeeds.
	e.clock.Advance(time.Minute)
	waitFor(t, "the second attempt", func() bool { return e.es.count("Reclaim", guid) == 2 })
	waitFor(t, "the failure to be recorded", func() bool {
		return len(e.events(accountA, "messagehub.instance.reclaim")) == 2
	})
	e.restart()
	e.clock.Advance(2 * time.Minute)
	waitFor(t, "the instance to be removed", func() bool { return e.state(guid) == "removed" })
	if n := e.es.count("Reclaim", guid); n != 3 {
		t.Errorf("Reclaim called %d times, want 3", n)
	}
	if rec, err := e.ctl.GetReclamation(aliceCtx(e), id); err != nil || rec.State != controller.ReclamationReclaimed {
		t.Errorf("reclamation %+v, %v", rec, err)
	}
}

func TestReclamationWindowIsPerService(t *testing.T) {
	e := newEnv(t)
	// A service registered with its own window.
	svc := controller.CatalogService{Name: "databases-for-redis", ID: "redis", DisplayName: "Databases for Redis",
		Plans: []controller.Plan{{ID: "redis-standard", Name: "standard-redis"}}, Regions: []string{"eu-gb"}, ReclamationWindow: 3 * 24 * time.Hour}
	b := newBroker()
	if err := e.ctl.Register(svc, b); err != nil {
		t.Fatal(err)
	}
	e.policies.grants["IBMid-alice"] = append(e.policies.grants["IBMid-alice"], grant{"databases-for-redis", "", "crn:v1:bluemix:public:iam::::role:Editor"})
	res := e.do("alice", "POST", "/v2/resource_instances", map[string]any{"name": "r", "target": "eu-gb", "resource_plan_id": "standard-redis"}).want(t, 201)
	guid := res.str("guid")
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, 202)
	target, _ := time.Parse(time.RFC3339, e.reclamationOf(guid)["target_time"].(string))
	if !target.Equal(epoch.Add(3 * 24 * time.Hour)) {
		t.Errorf("target_time %v, want 3 days after deletion", target)
	}
	if err := e.ctl.Register(svc, b); err == nil {
		t.Error("registering a service twice was accepted")
	}
}

func aliceCtx(e *env) context.Context {
	return auth.WithPrincipal(context.Background(), e.policies.users["alice"])
}

func TestConcurrentDeletesScheduleOneReclamation(t *testing.T) {
	e := newEnv(t)
	guid := e.createInstance("es", esPlan, nil).str("guid")
	statuses := make(chan int, 8)
	for i := range 8 {
		go func() {
			if i%2 == 0 {
				statuses <- e.do("alice", "PATCH", "/v2/resource_instances/"+guid, map[string]any{"name": "renamed"}).status
				return
			}
			statuses <- e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).status
		}()
	}
	count := map[int]int{}
	for range 8 {
		count[<-statuses]++
	}
	if count[http.StatusAccepted] != 1 || count[http.StatusAccepted]+count[http.StatusGone]+count[http.StatusOK]+count[http.StatusConflict] != 8 {
		t.Errorf("statuses %v: want one delete accepted", count)
	}
	e.reclamationOf(guid)
	if got := e.state(guid); got != "pending_reclamation" {
		t.Errorf("instance is %s: an update overwrote the deletion", got)
	}
	if n := e.es.count("Suspend", guid); n != 1 {
		t.Errorf("suspended %d times", n)
	}
}

func TestInactiveInstanceKeepsItsReasonThroughReclamation(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	guid := e.createInstance("es", esPlan, nil).str("guid")
	const reason = "The root key of the deployment was destroyed"
	if err := e.ctl.SetInactive(ctx, guid, reason); err != nil {
		t.Fatal(err)
	}
	res := e.do("alice", "GET", "/v2/resource_instances/"+guid, nil).want(t, 200)
	if res.str("state") != "inactive" || res.str("state_reason") != reason {
		t.Errorf("inactive instance: %s", res.raw)
	}
	if n := e.do("alice", "GET", "/v2/resource_instances?state=inactive", nil).body["rows_count"]; n != 1.0 {
		t.Errorf("%v inactive instances listed", n)
	}
	e.do("alice", "POST", "/v2/resource_keys", map[string]any{"name": "k", "source": guid}).want(t, http.StatusConflict)
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, http.StatusAccepted)
	if err := e.ctl.SetActive(ctx, guid); err == nil {
		t.Error("a deleted instance was made active")
	}
	e.do("alice", "POST", "/v1/reclamations/"+e.reclamationOf(guid)["id"].(string)+"/actions/restore", nil).want(t, 200)
	if got := e.state(guid); got != "inactive" {
		t.Errorf("restored instance is %s, want inactive as it was deleted", got)
	}
	if err := e.ctl.SetActive(ctx, guid); err != nil {
		t.Fatal(err)
	}
	if res := e.do("alice", "GET", "/v2/resource_instances/"+guid, nil); res.str("state") != "active" || res.body["state_reason"] != nil {
		t.Errorf("re-enabled instance: %s", res.raw)
	}
}
