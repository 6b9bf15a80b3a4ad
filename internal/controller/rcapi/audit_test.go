package rcapi

import (
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/errs"
)

// wantEvent checks the one event of action on target (the last if several).
type wantEvent struct {
	action, outcome string
	code            int
	initiator       string
	message         string
	failure         string // part of reasonForFailure
}

func (e *env) checkEvent(t *testing.T, target string, w wantEvent) audit.Event {
	t.Helper()
	var found *audit.Event
	for _, ev := range e.events(accountA, w.action) {
		if ev.Target.ID == target {
			found = &ev
		}
	}
	if found == nil {
		t.Fatalf("no %s event on %s", w.action, target)
	}
	ev := *found
	if ev.Outcome != w.outcome || ev.Reason.ReasonCode != w.code || ev.Initiator.ID != w.initiator ||
		(w.message != "" && ev.Message != w.message) || !strings.Contains(ev.Reason.ReasonForFailure, w.failure) {
		t.Errorf("%s event: outcome %s code %d initiator %s message %q reason %q; want %+v", w.action, ev.Outcome,
			ev.Reason.ReasonCode, ev.Initiator.ID, ev.Message, ev.Reason.ReasonForFailure, w)
	}
	return ev
}

func TestInstanceLifecycleIsAudited(t *testing.T) {
	e := newEnv(t)
	created := e.createInstance("kp", kmsPlan, nil)
	guid, crn := created.str("guid"), created.str("crn")
	ev := e.checkEvent(t, crn, wantEvent{action: "kms.instance.create", outcome: "success", code: 201, initiator: "IBMid-alice", message: "Key Protect: create instance"})
	if ev.CorrelationID != created.header.Get("Correlation-Id") || ev.Target.Name != "kp" || ev.Target.TypeURI != "kms/instance" {
		t.Errorf("create event %+v", ev)
	}
	e.do("alice", "PATCH", "/v2/resource_instances/"+guid, map[string]any{"name": "kp2"}).want(t, 200)
	e.checkEvent(t, crn, wantEvent{action: "kms.instance.update", outcome: "success", code: 200, initiator: "IBMid-alice"})

	kguid := e.do("alice", "POST", "/v2/resource_keys", map[string]any{"name": "k", "source": guid}).want(t, 201).str("crn")
	ev = e.checkEvent(t, kguid, wantEvent{action: "kms.key.create", outcome: "success", code: 201, initiator: "IBMid-alice", message: "Key Protect: create key"})
	for _, ev := range e.events(accountA, "kms.key.create") {
		if strings.Contains(ev.Message+ev.Reason.ReasonForFailure, "secret-for") {
			t.Errorf("an event holds the credentials: %+v", ev)
		}
	}
	e.do("viewer", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, 403)
	ev = e.checkEvent(t, crn, wantEvent{action: "kms.instance.delete", outcome: "failure", code: 403, initiator: "IBMid-viewer", message: "Key Protect: delete instance -failure", failure: "not authorized"})
	if ev.Severity != audit.Critical {
		t.Errorf("a refused delete has severity %s", ev.Severity)
	}
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid+"?recursive=true", nil).want(t, 202)
	e.checkEvent(t, kguid, wantEvent{action: "kms.key.delete", outcome: "success", code: 204, initiator: "IBMid-alice"})
	e.checkEvent(t, crn, wantEvent{action: "kms.instance.delete", outcome: "success", code: 202, initiator: "IBMid-alice"})
	e.checkEvent(t, crn, wantEvent{action: "kms.instance.schedule_reclaim", outcome: "success", code: 202, initiator: "IBMid-alice", message: "Key Protect: schedule reclaim instance"})
	rec := e.reclamationOf(guid)["id"].(string)
	e.do("alice", "POST", "/v1/reclamations/"+rec+"/actions/restore", nil).want(t, 200)
	e.checkEvent(t, crn, wantEvent{action: "kms.instance.restore", outcome: "success", code: 200, initiator: "IBMid-alice"})
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, 202)
	e.do("alice", "POST", "/v1/reclamations/"+e.reclamationOf(guid)["id"].(string)+"/actions/reclaim", nil).want(t, 200)
	e.checkEvent(t, crn, wantEvent{action: "kms.instance.reclaim", outcome: "success", code: 200, initiator: "IBMid-alice"})
	// Refused restores are audited too.
	e.do("alice", "POST", "/v1/reclamations/"+rec+"/actions/restore", nil).want(t, 409)
	e.checkEvent(t, crn, wantEvent{action: "kms.instance.restore", outcome: "failure", code: 409, initiator: "IBMid-alice", failure: "only a scheduled reclamation"})
}

func TestFailuresAreAudited(t *testing.T) {
	e := newEnv(t)
	// A create the service refuses.
	e.es.set(func(b *recordingBroker) {
		b.provisionErr = errs.E("streams.Provision", errs.Invalid, "S2S_POLICY_MISSING", "Missing or mis-configured S2S Authorization Policy")
	})
	failed := e.do("alice", "POST", "/v2/resource_instances", map[string]any{"name": "es", "target": "us-south", "resource_plan_id": esPlan}).want(t, 400)
	evs := e.events(accountA, "messagehub.instance.create")
	if len(evs) != 1 || evs[0].Outcome != "failure" || evs[0].Reason.ReasonCode != 400 || evs[0].Message != "Event Streams: create instance -failure" ||
		!strings.Contains(evs[0].Reason.ReasonForFailure, "S2S Authorization") || evs[0].CorrelationID != failed.header.Get("Correlation-Id") {
		t.Fatalf("failed create events: %+v", evs)
	}
	e.es.set(func(b *recordingBroker) { b.provisionErr = nil })
	// A create with a bad region names the service it was for.
	e.do("alice", "POST", "/v2/resource_instances", map[string]any{"name": "es", "target": "mars", "resource_plan_id": esPlan}).want(t, 400)
	if evs := e.events(accountA, "messagehub.instance.create"); len(evs) != 2 || !strings.Contains(evs[1].Reason.ReasonForFailure, "not a region") {
		t.Errorf("bad-region create events: %+v", evs)
	}
	// A create refused by IAM is recorded on the service in the account.
	e.do("viewer", "POST", "/v2/resource_instances", map[string]any{"name": "es", "target": "eu-de", "resource_plan_id": esPlan}).want(t, 403)
	e.checkEvent(t, "crn:v1:bluemix:public:messagehub:eu-de:a/"+accountA+":::", wantEvent{action: "messagehub.instance.create",
		outcome: "failure", code: 403, initiator: "IBMid-viewer", failure: "not authorized"})
	// Refused before any service is known: nothing to attribute the event to.
	e.do("alice", "POST", "/v2/resource_instances", map[string]any{"name": "es", "target": "us-south", "resource_plan_id": "gold"}).want(t, 400)
	if n := len(e.events(accountA, "*")); n != 3 {
		t.Errorf("%d events after a create for an unknown plan, want 3", n)
	}
	// A reclaim that fails in the broker, and its retry by the scheduler.
	guid := e.createInstance("es", esPlan, nil).str("guid")
	crn := e.instance(guid).CRN.String()
	e.es.set(func(b *recordingBroker) { b.reclaimFails = 1 })
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, 202)
	e.clock.Advance(9 * 24 * time.Hour)
	waitFor(t, "the failed reclaim", func() bool { return e.es.count("Reclaim", guid) == 1 })
	waitFor(t, "its event", func() bool { return len(e.events(accountA, "messagehub.instance.reclaim")) == 1 })
	e.checkEvent(t, crn, wantEvent{action: "messagehub.instance.reclaim", outcome: "failure", code: 503, initiator: "resource-controller", failure: "storage of the deployment is unavailable"})
	e.clock.Advance(time.Minute)
	waitFor(t, "the retried reclaim's event", func() bool { return len(e.events(accountA, "messagehub.instance.reclaim")) == 2 })
	ev := e.checkEvent(t, crn, wantEvent{action: "messagehub.instance.reclaim", outcome: "success", code: 200, initiator: "resource-controller"})
	if ev.CorrelationID == "" {
		t.Error("the scheduler's event has no correlation id")
	}
	if got := e.state(guid); got != "removed" {
		t.Errorf("instance is %s after the reclaim event", got)
	}
}
