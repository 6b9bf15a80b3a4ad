package e2e

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/iam"
)

// TestEveryServiceMintsCredentialsTheSameWay creates a resource key on a Key
// Protect instance and one on an Event Streams deployment: both are minted
// by the one path internal/server has for service credentials, so each has
// one service ID named after the key and described the same way, one API
// key described by the key's CRN, and one access policy with the key's
// role on exactly its instance, with the same attributes and operators.
func TestEveryServiceMintsCredentialsTheSameWay(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	account, _ := admin.account()
	kpGUID := admin.keyProtect("creds-kp")
	kpKey := admin.must("POST", "/v2/resource_keys", nil, map[string]any{"name": "creds-kp-writer", "source": kpGUID, "role": "Writer"})
	dep := admin.provisionDeployment(kpGUID, "creds-es")
	esKey := admin.must("POST", "/v2/resource_keys", nil, map[string]any{"name": "creds-es-writer", "source": dep.guid, "role": "Writer"})

	// shape lists what IAM holds for a resource key's credentials, with the
	// key's and the instance's own names replaced by placeholders.
	shape := func(key map[string]any, service, instGUID string) string {
		t.Helper()
		keyGUID, keyCRN, name, instCRN := key["guid"].(string), key["crn"].(string), key["name"].(string), key["source_crn"].(string)
		var sids struct{ ServiceIDs []iam.ServiceID }
		q := url.Values{"account_id": {account}, "name": {"ServiceId-" + keyGUID}}
		if err := admin.do("GET", "/v1/serviceids?"+q.Encode(), nil, nil, &sids); err != nil || len(sids.ServiceIDs) != 1 {
			t.Fatalf("service IDs named after %s key %s: %+v %v, want one", service, keyGUID, sids, err)
		}
		sid := sids.ServiceIDs[0]
		creds := key["credentials"].(map[string]any)
		if creds["iam_serviceid_crn"] != sid.IAMID {
			t.Errorf("%s credentials name service ID %v, want %s", service, creds["iam_serviceid_crn"], sid.IAMID)
		}
		var keys struct{ APIKeys []iam.APIKey }
		q = url.Values{"account_id": {account}, "iam_id": {sid.IAMID}}
		if err := admin.do("GET", "/v1/apikeys?"+q.Encode(), nil, nil, &keys); err != nil || len(keys.APIKeys) != 1 {
			t.Fatalf("API keys of %s's service ID: %+v %v, want one", service, keys, err)
		}
		var pols struct{ Policies []iam.Policy }
		if err := admin.do("GET", "/v1/policies?"+q.Encode(), nil, nil, &pols); err != nil || len(pols.Policies) != 1 {
			t.Fatalf("policies of %s's service ID: %+v %v, want one", service, pols, err)
		}
		p, _ := json.Marshal(map[string]any{"roles": pols.Policies[0].Roles, "resources": pols.Policies[0].Resources})
		return strings.NewReplacer(keyGUID, "<key>", keyCRN, "<key crn>", name, "<name>", instCRN, "<instance crn>", instGUID, "<instance>",
			service, "<service>", sid.IAMID, "<iam id>").Replace(strings.Join([]string{
			"service ID " + sid.Name + ": " + sid.Description + " in " + sid.AccountID,
			"API key " + keys.APIKeys[0].Name + ": " + keys.APIKeys[0].Description + " in " + keys.APIKeys[0].AccountID,
			"policy " + string(p)}, "\n"))
	}
	kp, es := shape(kpKey, "kms", kpGUID), shape(esKey, "messagehub", dep.guid)
	if kp != es {
		t.Fatalf("Key Protect's credentials:\n%s\nEvent Streams':\n%s\nwant the same shape", kp, es)
	}
	for _, want := range []string{"service ID ServiceId-<key>: Service credentials <name> of <instance crn> in " + account,
		"API key <name>: Service credentials <key crn> in " + account, `"role_id":"crn:v1:bluemix:public:iam::::serviceRole:Writer"`,
		`{"name":"serviceName","value":"<service>","operator":"stringEquals"}`, `{"name":"serviceInstance","value":"<instance>","operator":"stringEquals"}`} {
		if !strings.Contains(es, want) {
			t.Errorf("the credentials' shape\n%s\nlacks %s", es, want)
		}
	}
}
