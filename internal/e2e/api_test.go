package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"testing"

	"github.com/keyline/keyline/internal/client"
)

// api wraps a client with the calls these tests make again and again.
type api struct {
	t *testing.T
	c *client.Client
}

func (e *env) as(c *client.Client) *api { return &api{t: e.t, c: c} }

func (a *api) do(method, path string, header map[string]string, body any, out any) error {
	return a.c.Do(context.Background(), client.Request{Method: method, Path: path, Header: header, Body: body}, out)
}

// must calls the API and fails the test on error.
func (a *api) must(method, path string, header map[string]string, body any) map[string]any {
	a.t.Helper()
	var out map[string]any
	if err := a.do(method, path, header, body, &out); err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	return out
}

// fails calls the API, expects the given status, and returns the error.
func (a *api) fails(status int, method, path string, header map[string]string, body any) *client.Error {
	a.t.Helper()
	err := a.do(method, path, header, body, nil)
	ce, ok := err.(*client.Error)
	if !ok || ce.Status != status {
		a.t.Fatalf("%s %s: got %v, want HTTP %d", method, path, err, status)
	}
	return ce
}

func (a *api) account() (account, iamID string) {
	a.t.Helper()
	d := a.must("GET", "/v1/apikeys/details", map[string]string{"IAM-ApiKey": a.c.APIKey}, nil)
	return d["account_id"].(string), d["iam_id"].(string)
}

// createInstance provisions a service instance and returns its representation.
func (a *api) createInstance(name, service, plan, region string, params map[string]any) map[string]any {
	a.t.Helper()
	body := map[string]any{"name": name, "resource_id": service, "resource_plan_id": plan, "target": region}
	if params != nil {
		body["parameters"] = params
	}
	return a.must("POST", "/v2/resource_instances", nil, body)
}

func kpHeader(guid string) map[string]string { return map[string]string{"bluemix-instance": guid} }

// createRootKey creates a generated root key and returns id and CRN.
func (a *api) createRootKey(instanceGUID, name string) (id, crn string) {
	a.t.Helper()
	body := map[string]any{
		"metadata":  map[string]any{"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
		"resources": []any{map[string]any{"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false}},
	}
	out := a.must("POST", "/api/v2/keys", kpHeader(instanceGUID), body)
	key := out["resources"].([]any)[0].(map[string]any)
	return key["id"].(string), key["crn"].(string)
}

// authorize creates a service-to-service authorization source -> kms.
func (a *api) authorize(account, source, targetInstance string, delegate bool) map[string]any {
	a.t.Helper()
	roles := []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Reader"}}
	if delegate {
		roles = append(roles, map[string]any{"role_id": "crn:v1:bluemix:public:iam::::role:AuthorizationDelegator"})
	}
	res := []any{
		map[string]any{"name": "accountId", "operator": "stringEquals", "value": account},
		map[string]any{"name": "serviceName", "operator": "stringEquals", "value": "kms"},
	}
	if targetInstance != "" {
		res = append(res, map[string]any{"name": "serviceInstance", "operator": "stringEquals", "value": targetInstance})
	}
	body := map[string]any{
		"type":      "authorization",
		"subjects":  []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": account}, map[string]any{"name": "serviceName", "value": source}}}},
		"roles":     roles,
		"resources": []any{map[string]any{"attributes": res}},
	}
	return a.must("POST", "/v1/policies", nil, body)
}

func (a *api) authorizations(account string) []map[string]any {
	a.t.Helper()
	out := a.must("GET", "/v1/policies?"+url.Values{"account_id": {account}, "type": {"authorization"}}.Encode(), nil, nil)
	var ps []map[string]any
	for _, p := range out["policies"].([]any) {
		ps = append(ps, p.(map[string]any))
	}
	return ps
}

func (a *api) tasks(deploymentCRN string) []map[string]any {
	a.t.Helper()
	out := a.must("GET", client.Path("v5", "ibm", "deployments", deploymentCRN, "tasks"), nil, nil)
	var ts []map[string]any
	for _, x := range out["tasks"].([]any) {
		ts = append(ts, x.(map[string]any))
	}
	return ts
}

func dump(v any) string {
	b, _ := json.MarshalIndent(v, "", "  ")
	return string(b)
}

var _ = fmt.Sprint
