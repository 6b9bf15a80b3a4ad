package rcapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/errs"
)

// instance returns the controller's record of an instance created over HTTP.
func (e *env) instance(guid string) controller.Instance {
	e.t.Helper()
	inst, err := e.ctl.GetInstance(aliceCtx(e), guid)
	if err != nil {
		e.t.Fatal(err)
	}
	return *inst
}

func TestTasksShowProgress(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	inst := e.instance(e.createInstance("es", esPlan, nil).str("guid"))
	task, err := e.ctl.Tasks().Start(ctx, inst, "instance", "Syncing KMS state")
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Progress(ctx, 40); err != nil {
		t.Fatal(err)
	}
	taskCRN := inst.CRN.String()[:len(inst.CRN.String())-2] + ":task:" + task.ID
	for _, path := range []string{
		"/v5/ibm/deployments/" + escaped(inst.CRN.String()) + "/tasks",
		"/v5/ibm/deployments/" + inst.GUID + "/tasks",
	} {
		res := e.do("alice", "GET", path, nil).want(t, 200)
		tasks := res.body["tasks"].([]any)
		if len(tasks) != 1 {
			t.Fatalf("%s: %s", path, res.raw)
		}
		got := tasks[0].(map[string]any)
		if got["id"] != taskCRN || got["resource_type"] != "instance" || got["description"] != "Syncing KMS state" ||
			got["status"] != "running" || got["deployment_id"] != inst.CRN.String() || got["progress_percent"] != 40.0 || got["created_at"] == nil {
			t.Errorf("task %v", got)
		}
	}
	e.clock.Advance(time.Minute)
	if err := task.Complete(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{escaped(taskCRN), task.ID} {
		res := e.do("alice", "GET", "/v5/ibm/tasks/"+id, nil).want(t, 200)
		got := res.body["task"].(map[string]any)
		if got["status"] != "completed" || got["progress_percent"] != 100.0 || got["updated_at"] == got["created_at"] {
			t.Errorf("completed task %v", got)
		}
	}
	if err := task.Fail(ctx, "too late"); errs.KindOf(err) != errs.Conflict {
		t.Errorf("failing a completed task: %v", err)
	}
	if err := task.Progress(ctx, 101); errs.KindOf(err) != errs.Invalid {
		t.Errorf("progress 101: %v", err)
	}
	e.do("bob", "GET", "/v5/ibm/tasks/"+task.ID, nil).want(t, http.StatusNotFound)
	e.do("alice", "GET", "/v5/ibm/tasks/"+escaped(inst.CRN.Child("task", "0faea465-de5a-4f14-a5ff-b402fefbd652").String()), nil).want(t, http.StatusNotFound)
	// Completed tasks are listed for 48 hours, failed ones for 8 days.
	failed, _ := e.ctl.Tasks().Start(ctx, inst, "backup", "Creating a backup")
	if err := failed.Fail(ctx, "The backup volume is full"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		advance time.Duration
		want    []string
	}{{0, []string{"failed", "completed"}}, {49 * time.Hour, []string{"failed"}}, {7 * 24 * time.Hour, nil}} {
		e.clock.Advance(tc.advance)
		tasks, err := e.ctl.Tasks().List(ctx, inst.GUID)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, task := range tasks {
			got = append(got, task.Status)
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("after %v: tasks %v, want %v", tc.advance, got, tc.want)
		}
	}
}

func TestRunningTaskIsFailedByARestart(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	inst := e.instance(e.createInstance("es", esPlan, nil).str("guid"))
	task, err := e.ctl.Tasks().Start(ctx, inst, "instance", "Syncing KMS state")
	if err != nil {
		t.Fatal(err)
	}
	e.restart()
	// The schedulers (RunTakeovers) take over a stopped process's tasks; a
	// kind no Takeover carries on is failed.
	if err := e.ctl.TakeOverStopped(ctx); err != nil {
		t.Fatal(err)
	}
	res := e.do("alice", "GET", "/v5/ibm/tasks/"+task.ID, nil).want(t, 200)
	got := res.body["task"].(map[string]any)
	if got["status"] != "failed" || got["reason"] != "Interrupted by a restart" {
		t.Errorf("task after restart: %v", got)
	}
	task, err = e.ctl.Tasks().Get(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Progress(ctx, 50); errs.KindOf(err) != errs.Conflict {
		t.Errorf("progress on an interrupted task: %v", err)
	}
}

func TestServicesFindTheirOwnInstances(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	es1 := e.createInstance("es1", esPlan, nil)
	es2 := e.createInstance("es2", esPlan, nil).str("guid")
	e.createInstance("kp", kmsPlan, nil)
	e.do("bob", "POST", "/v2/resource_instances", map[string]any{"name": "es3", "target": "us-south", "resource_plan_id": esPlan}).want(t, 201)
	e.do("alice", "DELETE", "/v2/resource_instances/"+es2, nil).want(t, 202)

	for _, tc := range []struct {
		states []string
		n      int
	}{{nil, 3}, {[]string{controller.StateActive}, 2}, {[]string{controller.StatePendingReclamation, controller.StateInactive}, 1}} {
		got, err := e.ctl.InstancesOf(ctx, "messagehub", tc.states...)
		if err != nil || len(got) != tc.n {
			t.Errorf("InstancesOf(messagehub, %v): %d instances, %v; want %d", tc.states, len(got), err, tc.n)
		}
		for _, inst := range got {
			if inst.ServiceName != "messagehub" {
				t.Errorf("InstancesOf(messagehub) returned a %s instance", inst.ServiceName)
			}
		}
	}
	inst, err := e.ctl.LookupInstance(ctx, es1.str("crn"))
	if err != nil || inst.GUID != es1.str("guid") {
		t.Errorf("LookupInstance by CRN: %+v, %v", inst, err)
	}
	if _, err := e.ctl.LookupInstance(ctx, "6f1bd0c4-1c9c-4c3a-9f4f-58f8d7a5a0b1"); errs.KindOf(err) != errs.NotExist {
		t.Errorf("LookupInstance of nothing: %v", err)
	}
}
