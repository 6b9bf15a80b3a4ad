package client

import (
	"context"
	"fmt"
)

// EventStreams is an Event Streams deployment whose disk is encrypted with a
// Key Protect root key, with Manager credentials for its Kafka listener.
type EventStreams struct {
	KeyProtect string // GUID of the Key Protect instance
	KeyID      string // of the root key
	KeyCRN     string
	GUID       string // of the deployment
	Brokers    []string
	User       string // SASL PLAIN user ("token")
	APIKey     string // SASL PLAIN password
}

// ProvisionEventStreams does what an account administrator does before
// Kafka clients can connect: a Key Protect instance, the authorization that
// lets messagehub read its keys, a root key, an Event Streams deployment
// with that key as its disk key, and a Manager resource key. Names are
// prefixed with name.
func (c *Client) ProvisionEventStreams(ctx context.Context, name string) (*EventStreams, error) {
	call := func(method, path string, header map[string]string, body any) (map[string]any, error) {
		var out map[string]any
		if err := c.Do(ctx, Request{Method: method, Path: path, Header: header, Body: body}, &out); err != nil {
			return nil, fmt.Errorf("%s %s: %w", method, path, err)
		}
		return out, nil
	}
	details, err := call("GET", "/v1/apikeys/details", map[string]string{"IAM-ApiKey": c.APIKey}, nil)
	if err != nil {
		return nil, err
	}
	account, _ := details["account_id"].(string)
	kp, err := call("POST", "/v2/resource_instances", nil, map[string]any{"name": name + "-kp", "resource_id": "kms",
		"resource_plan_id": "tiered-pricing", "target": "us-south"})
	if err != nil {
		return nil, err
	}
	es := &EventStreams{}
	es.KeyProtect, _ = kp["guid"].(string)
	attr := func(name, value string) map[string]any {
		return map[string]any{"name": name, "operator": "stringEquals", "value": value}
	}
	if _, err := call("POST", "/v1/policies", nil, map[string]any{
		"type": "authorization",
		"subjects": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": account},
			map[string]any{"name": "serviceName", "value": "messagehub"}}}},
		"roles":     []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Reader"}},
		"resources": []any{map[string]any{"attributes": []any{attr("accountId", account), attr("serviceName", "kms"), attr("serviceInstance", es.KeyProtect)}}},
	}); err != nil {
		return nil, err
	}
	keys, err := call("POST", "/api/v2/keys", map[string]string{"bluemix-instance": es.KeyProtect}, map[string]any{
		"metadata":  map[string]any{"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
		"resources": []any{map[string]any{"type": "application/vnd.ibm.kms.key+json", "name": name + "-disk", "extractable": false}},
	})
	if err != nil {
		return nil, err
	}
	if rs, _ := keys["resources"].([]any); len(rs) == 1 {
		key, _ := rs[0].(map[string]any)
		es.KeyID, _ = key["id"].(string)
		es.KeyCRN, _ = key["crn"].(string)
	}
	if es.KeyID == "" || es.KeyCRN == "" {
		return nil, fmt.Errorf("POST /api/v2/keys answered no key")
	}
	dep, err := call("POST", "/v2/resource_instances", nil, map[string]any{"name": name, "resource_id": "messagehub",
		"resource_plan_id": "standard", "target": "us-south", "parameters": map[string]any{"disk_encryption_key_crn": es.KeyCRN}})
	if err != nil {
		return nil, err
	}
	es.GUID, _ = dep["guid"].(string)
	rk, err := call("POST", "/v2/resource_keys", nil, map[string]any{"name": name + "-manager", "source": es.GUID, "role": "Manager"})
	if err != nil {
		return nil, err
	}
	creds, _ := rk["credentials"].(map[string]any)
	brokers, _ := creds["kafka_brokers_sasl"].([]any)
	for _, b := range brokers {
		if s, ok := b.(string); ok {
			es.Brokers = append(es.Brokers, s)
		}
	}
	es.User, _ = creds["user"].(string)
	es.APIKey, _ = creds["api_key"].(string)
	if len(es.Brokers) == 0 || es.APIKey == "" {
		return nil, fmt.Errorf("the resource key of %s holds no Kafka credentials", es.GUID)
	}
	return es, nil
}
