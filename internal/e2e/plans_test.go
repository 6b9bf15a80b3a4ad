package e2e

import (
	"errors"
	"testing"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
)

// messagehubRootKey creates a Key Protect instance that messagehub may
// use and a root key in it, and returns the key's CRN.
func (a *api) messagehubRootKey() string {
	a.t.Helper()
	account, _ := a.account()
	kpGUID := a.createInstance("kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
	_, keyCRN := a.createRootKey(kpGUID, "disk")
	a.authorize(account, "messagehub", kpGUID, false)
	return keyCRN
}

// TestEnterprisePlanDeployment: the plan the seed's deployments use is
// offered, with a key, shows its limits, and its topics take Event Streams
// configs and replication factor 3, changed through the admin REST API.
func TestEnterprisePlanDeployment(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	keyCRN := admin.messagehubRootKey()

	inst := admin.createInstance("es-ent", "messagehub", "enterprise", "us-south", map[string]any{"disk_encryption_key_crn": keyCRN})
	if inst["state"] != "active" || inst["resource_plan_id"] != "eventstreams-gen2-enterprise" {
		t.Fatalf("enterprise deployment: %s", dump(inst))
	}
	guid := inst["guid"].(string)
	limits, _ := admin.deploymentInfo(guid)["plan_limits"].(map[string]any)
	if limits["max_partitions"] != 3000.0 || limits["max_message_bytes"] != float64(10<<20) {
		t.Fatalf("plan_limits = %v", limits)
	}
	std := admin.createInstance("es-std", "messagehub", "standard", "us-south", nil)
	if l, _ := admin.deploymentInfo(std["guid"].(string))["plan_limits"].(map[string]any); l["max_partitions"] != 100.0 {
		t.Fatalf("standard plan_limits = %v", l)
	}

	manager := admin.credentials(guid, "mgr", "Manager")
	adm := kadm.NewClient(franz(t, manager))
	big := "5000000"
	r, err := adm.CreateTopic(testCtx(t), 200, 3, map[string]*string{"cleanup.policy": ptr("compact"), "max.message.bytes": &big}, "profiles")
	if err == nil {
		err = r.Err
	}
	if err != nil {
		t.Fatalf("enterprise topic of 200 partitions, replication 3, 5 MB messages, compacted: %v (%s)", err, r.ErrMessage)
	}
	var patched map[string]any
	if code := adminREST(t, manager, "PATCH", "/admin/topics/profiles", map[string]any{
		"configs": []map[string]any{{"name": "retention.ms", "value": "86400000"}}}, &patched); code != 202 {
		t.Fatalf("PATCH /admin/topics/profiles: %d %v", code, patched)
	}
	rcs, err := adm.DescribeTopicConfigs(testCtx(t), "profiles")
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := rcs.On("profiles", nil)
	got := map[string]string{}
	for _, c := range rc.Configs {
		got[c.Key] = c.MaybeValue()
	}
	if got["retention.ms"] != "86400000" || got["cleanup.policy"] != "compact" || got["max.message.bytes"] != big {
		t.Fatalf("configs after PATCH: %v", got)
	}
	stdAdm := kadm.NewClient(franz(t, admin.credentials(std["guid"].(string), "std-mgr", "Manager")))
	r, err = stdAdm.CreateTopic(testCtx(t), 200, 3, nil, "wide")
	if err == nil {
		err = r.Err
	}
	if !errors.Is(err, kerr.PolicyViolation) {
		t.Fatalf("standard topic of 200 partitions: %v, want POLICY_VIOLATION", err)
	}
}
