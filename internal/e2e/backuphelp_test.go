package e2e

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
)

// byok is an account ready for Bring Your Own Key backups: a Key Protect
// instance, a backup root key, and the user's messagehub -> kms
// authorization with Reader and AuthorizationDelegator.
type byok struct {
	t         *testing.T
	e         *env
	admin     *api
	account   string
	kpGUID    string
	keyID     string
	keyCRN    string
	delegator map[string]any
}

func newBYOK(t *testing.T, e *env) *byok {
	t.Helper()
	admin := e.as(e.admin)
	account, _ := admin.account()
	kpGUID := admin.createInstance("kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
	keyID, keyCRN := admin.createRootKey(kpGUID, "backup-key")
	delegator := admin.authorize(account, "messagehub", kpGUID, true)
	return &byok{t: t, e: e, admin: admin, account: account, kpGUID: kpGUID, keyID: keyID, keyCRN: keyCRN, delegator: delegator}
}

// deployment provisions a deployment whose backups use the shared key.
func (b *byok) deployment(name string) map[string]any {
	b.t.Helper()
	return b.admin.createInstance(name, "messagehub", "standard", "us-south", map[string]any{"backup_encryption_key_crn": b.keyCRN})
}

// dependent is the active is -> kms authorization on the backup key, or nil.
func (b *byok) dependent() map[string]any {
	b.t.Helper()
	for _, p := range b.admin.authorizations(b.account) {
		if strings.Contains(dump(p["subjects"]), `"is"`) && strings.HasPrefix(str(p, "created_by_id"), "crn-") {
			return p
		}
	}
	return nil
}

func (b *byok) deletePolicy(p map[string]any) {
	b.t.Helper()
	b.admin.must("DELETE", client.Path("v1", "policies", p["id"].(string)), nil, nil)
}

// fresh is an admin client with a new bearer token: tokens expire after an
// hour of the fake clock.
func (e *env) fresh() *api { return e.as(client.New(e.url, adminKey)) }

// backupNow starts an on-demand backup and returns its task.
func (a *api) backupNow(deploymentCRN string) map[string]any {
	a.t.Helper()
	var out map[string]any
	err := a.c.Do(a.t.Context(), client.Request{Method: "POST", Path: client.Path("v5", "ibm", "deployments", deploymentCRN, "backups")}, &out)
	if err != nil {
		a.t.Fatalf("backup of %s: %v", deploymentCRN, err)
	}
	task, _ := out["task"].(map[string]any)
	if task == nil || task["resource_type"] != "backup" || task["deployment_id"] != deploymentCRN {
		a.t.Fatalf("a backup answers {\"task\":{...}} of resource_type backup: %s", dump(out))
	}
	return task
}

// waitTask waits until a task ends and returns it.
func (a *api) waitTask(taskID string) map[string]any {
	a.t.Helper()
	var task map[string]any
	waitFor(a.t, 30*time.Second, "task "+taskID+" to end", func() bool {
		task = a.must("GET", client.Path("v5", "ibm", "tasks", taskID), nil, nil)["task"].(map[string]any)
		return task["status"] == "completed" || task["status"] == "failed"
	})
	return task
}

// backup takes an on-demand backup, waits for it and returns its task.
func (a *api) backup(deploymentCRN string) map[string]any {
	a.t.Helper()
	return a.waitTask(a.backupNow(deploymentCRN)["id"].(string))
}

func (a *api) backups(deploymentCRN string) []map[string]any {
	a.t.Helper()
	out := a.must("GET", client.Path("v5", "ibm", "deployments", deploymentCRN, "backups"), nil, nil)
	var bs []map[string]any
	for _, x := range out["backups"].([]any) {
		bs = append(bs, x.(map[string]any))
	}
	return bs
}

// events lists audit events of action with outcome.
func (a *api) events(action, outcome string) []map[string]any {
	a.t.Helper()
	q := url.Values{"action": {action}, "limit": {"500"}}
	if outcome != "" {
		q.Set("outcome", outcome)
	}
	var evs []map[string]any
	for _, x := range a.must("GET", "/v1/audit/events?"+q.Encode(), nil, nil)["events"].([]any) {
		evs = append(evs, x.(map[string]any))
	}
	return evs
}

// backupEvent is the audit event of the backup that task ran, or nil.
func (a *api) backupEvent(task map[string]any) map[string]any {
	a.t.Helper()
	for _, ev := range a.events("event-streams.backup.create", "") {
		if rd, _ := ev["requestData"].(map[string]any); rd != nil && rd["taskId"] == task["id"] {
			return ev
		}
	}
	return nil
}

// mustFailBackup takes a backup of each deployment and checks that it
// fails as a failed task and an audit event whose reason contains every
// one of why.
func (a *api) mustFailBackup(deploymentCRN string, why ...string) {
	a.t.Helper()
	task := a.backup(deploymentCRN)
	if task["status"] != "failed" {
		a.t.Fatalf("the backup of %s %v, want failed: %s", deploymentCRN, task["status"], dump(task))
	}
	ev := a.backupEvent(task)
	if ev == nil || ev["outcome"] != "failure" || ev["severity"] == "normal" {
		a.t.Fatalf("no failure event for the failed backup task %s: %s", task["id"], dump(ev))
	}
	reason := ev["reason"].(map[string]any)["reasonForFailure"].(string)
	a.t.Logf("backup failure of %s: %s", deploymentCRN, reason)
	for _, w := range why {
		if !strings.Contains(task["reason"].(string), w) || !strings.Contains(reason, w) {
			a.t.Fatalf("the failed backup's task reason %q / event reason %q do not say %q", task["reason"], reason, w)
		}
	}
}

// mustBackUp takes a backup and checks that it completed, with its audit event.
func (a *api) mustBackUp(deploymentCRN string) map[string]any {
	a.t.Helper()
	task := a.backup(deploymentCRN)
	if task["status"] != "completed" || task["progress_percent"] != float64(100) {
		a.t.Fatalf("the backup of %s did not complete: %s", deploymentCRN, dump(task))
	}
	if ev := a.backupEvent(task); ev == nil || ev["outcome"] != "success" {
		a.t.Fatalf("no success event for backup task %s: %s", task["id"], dump(ev))
	}
	return task
}

func str(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}
