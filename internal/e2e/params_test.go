package e2e

import (
	"strings"
	"testing"
)

// The seed's API section tells users to send "disk_encryption_key" while
// its example says "disk_encryption_key_crn": both must give a deployment
// encrypted with the user's key, and a parameter the deployment does not
// know must be refused, never dropped, since dropping a misspelt key name
// would quietly give a service-managed key.
func TestProvisionParameterNames(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	keyCRN := admin.messagehubRootKey()

	for _, tc := range []struct {
		name string
		body map[string]any
	}{
		{"top-level disk_encryption_key (the seed's prose)", map[string]any{"disk_encryption_key": keyCRN}},
		{"top-level disk_encryption_key_crn (the seed's example)", map[string]any{"disk_encryption_key_crn": keyCRN}},
		{"disk_encryption_key in parameters", map[string]any{"parameters": map[string]any{"disk_encryption_key": keyCRN}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := map[string]any{"name": "es", "resource_plan_id": "eventstreams-gen2-standard", "target": "us-south"}
			for k, v := range tc.body {
				body[k] = v
			}
			inst := admin.must("POST", "/v2/resource_instances", nil, body)
			if inst["state"] != "active" {
				t.Fatalf("deployment is %v: %s", inst["state"], dump(inst))
			}
			params, _ := inst["parameters"].(map[string]any)
			if params["disk_encryption_key_crn"] != keyCRN || len(params) != 1 {
				t.Errorf("parameters = %v, want only disk_encryption_key_crn", params)
			}
			if got := admin.deploymentInfo(inst["guid"].(string))["disk_encryption_key_crn"]; got != keyCRN {
				t.Errorf("the deployment's disk key is %v, want %s", got, keyCRN)
			}
		})
	}

	before := len(admin.must("GET", "/v2/resource_instances?resource_id=messagehub", nil, nil)["resources"].([]any))
	for _, tc := range []struct {
		name, code, msg string
		params          map[string]any
	}{
		{"misspelt key parameter", "UNKNOWN_PARAMETER", `"disk_encryption_kye" is not a parameter`, map[string]any{"disk_encryption_kye": keyCRN}},
		{"alias and name disagree", "CONFLICTING_PARAMETER", "given twice", map[string]any{"disk_encryption_key": keyCRN, "disk_encryption_key_crn": "crn:v1:bluemix:public:kms:us-south:a/1:2:key:3"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ce := admin.fails(400, "POST", "/v2/resource_instances", nil, map[string]any{"name": "typo", "resource_plan_id": "eventstreams-gen2-standard",
				"target": "us-south", "parameters": tc.params})
			if ce.Code != tc.code || !strings.Contains(ce.Message, tc.msg) {
				t.Errorf("got %s %q, want %s mentioning %q", ce.Code, ce.Message, tc.code, tc.msg)
			}
		})
	}
	after := admin.must("GET", "/v2/resource_instances?resource_id=messagehub", nil, nil)["resources"].([]any)
	if len(after) != before {
		t.Errorf("refused creates left instances behind: %d before, %d after", before, len(after))
	}
}
