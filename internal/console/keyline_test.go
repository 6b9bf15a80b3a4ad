package console_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/server"
)

const keylineAdminKey = "console-admin-api-key-0123456789abcdefghijklmnop"

// keyline is a real Keyline server, every service wired, on loopback.
type keyline struct {
	t     testing.TB
	srv   *server.Server
	url   string
	admin *client.Client
	clock *clock.Fake
}

// startKeyline runs `keyline serve` in process on a fresh data directory
// and skips the test when the server does not mount the console yet.
func startKeyline(t testing.TB) *keyline {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv, err := server.New(ctx, server.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0", AdminAPIKey: keylineAdminKey, Clock: clk, Logger: logger})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
		srv.Close()
	})
	k := &keyline{t: t, srv: srv, url: srv.URL(), admin: client.New(srv.URL(), keylineAdminKey), clock: clk}
	resp, err := http.Get(k.url + "/console/signin")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Skipf("the server does not serve the console yet (GET /console/signin: %d)", resp.StatusCode)
	}
	return k
}

// call is one API call as the administrator; it fails the test on error.
func (k *keyline) call(method, path string, header map[string]string, body, out any) {
	k.t.Helper()
	if err := k.admin.Do(context.Background(), client.Request{Method: method, Path: path, Header: header, Body: body}, out); err != nil {
		k.t.Fatalf("%s %s: %v", method, path, err)
	}
}

// account is the administrator's account id.
func (k *keyline) account() string {
	k.t.Helper()
	var d struct {
		AccountID string `json:"account_id"`
	}
	k.call("GET", "/v1/apikeys/details", map[string]string{"IAM-ApiKey": keylineAdminKey}, nil, &d)
	return d.AccountID
}

type created struct {
	GUID string `json:"guid"`
	CRN  string `json:"crn"`
	Name string `json:"name"`
}

// createKMS provisions a Key Protect instance through the API.
func (k *keyline) createKMS(name, region string) created {
	k.t.Helper()
	var out created
	k.call("POST", "/v2/resource_instances", nil, map[string]any{"name": name, "resource_plan_id": "tiered-pricing", "target": region}, &out)
	return out
}

// createKey creates a root key through the API and returns its id.
func (k *keyline) createKey(kmsGUID, name string) string {
	id, _ := k.createKeyCRN(kmsGUID, name)
	return id
}

// createKeyCRN creates a root key and returns its id and CRN.
func (k *keyline) createKeyCRN(kmsGUID, name string) (id, crn string) {
	k.t.Helper()
	var out struct {
		Resources []struct {
			ID  string `json:"id"`
			CRN string `json:"crn"`
		} `json:"resources"`
	}
	k.call("POST", "/api/v2/keys", map[string]string{"bluemix-instance": kmsGUID}, map[string]any{
		"metadata":  map[string]any{"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
		"resources": []any{map[string]any{"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": false}},
	}, &out)
	return out.Resources[0].ID, out.Resources[0].CRN
}

// authorize lets Event Streams use the keys of a KMS instance (Reader).
func (k *keyline) authorize(account, kmsGUID string) {
	k.t.Helper()
	k.call("POST", "/v1/policies", nil, map[string]any{
		"type":     "authorization",
		"subjects": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": account}, map[string]any{"name": "serviceName", "value": "messagehub"}}}},
		"roles":    []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Reader"}},
		"resources": []any{map[string]any{"attributes": []any{
			map[string]any{"name": "accountId", "operator": "stringEquals", "value": account},
			map[string]any{"name": "serviceName", "operator": "stringEquals", "value": "kms"},
			map[string]any{"name": "serviceInstance", "operator": "stringEquals", "value": kmsGUID},
		}}},
	}, nil)
}

// createDeployment provisions an Event Streams deployment with a disk key.
func (k *keyline) createDeployment(name, diskKeyCRN string) created {
	k.t.Helper()
	var out created
	k.call("POST", "/v2/resource_instances", nil, map[string]any{"name": name, "resource_plan_id": "eventstreams-gen2-standard", "target": "us-south",
		"parameters": map[string]any{"disk_encryption_key_crn": diskKeyCRN}}, &out)
	return out
}

// createReader invites a user with read-only access to the account and
// returns an API key of theirs.
func (k *keyline) createReader(account string) string {
	k.t.Helper()
	var invited struct {
		Resources []struct {
			IAMID string `json:"iam_id"`
		} `json:"resources"`
		IAMID string `json:"iam_id"`
	}
	k.call("POST", "/v2/accounts/"+url.PathEscape(account)+"/users", nil, map[string]any{"users": []any{map[string]any{"email": "reader@example.com"}}}, &invited)
	iamID := invited.IAMID
	if len(invited.Resources) > 0 {
		iamID = invited.Resources[0].IAMID
	}
	if iamID == "" {
		k.t.Fatal("inviting a user returned no iam_id")
	}
	for _, role := range []string{"crn:v1:bluemix:public:iam::::serviceRole:Reader", "crn:v1:bluemix:public:iam::::role:Viewer"} {
		k.call("POST", "/v1/policies", nil, map[string]any{
			"type":      "access",
			"subjects":  []any{map[string]any{"attributes": []any{map[string]any{"name": "iam_id", "value": iamID}}}},
			"roles":     []any{map[string]any{"role_id": role}},
			"resources": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "operator": "stringEquals", "value": account}}}},
		}, nil)
	}
	var key struct {
		APIKey string `json:"apikey"`
	}
	k.call("POST", "/v1/apikeys", nil, map[string]any{"name": "reader-console", "iam_id": iamID}, &key)
	return key.APIKey
}

// hasInstance says whether an active or provisioning instance has this name.
func (k *keyline) hasInstance(name string) bool {
	k.t.Helper()
	var list struct {
		Resources []struct {
			Name string `json:"name"`
		} `json:"resources"`
	}
	k.call("GET", "/v2/resource_instances", nil, nil, &list)
	for _, r := range list.Resources {
		if r.Name == name {
			return true
		}
	}
	return false
}
