package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/oauth"

	"github.com/keyline/keyline/internal/client"
)

// cliDeployment makes, with the CLI, an Event Streams instance named name
// whose disk key is a root key of a new Key Protect instance.
func cliDeployment(t *testing.T, c *cli, name string) {
	t.Helper()
	var kp map[string]any
	json.Unmarshal([]byte(c.must("resource", "service-instance-create", name+"-kp", "kms", "tiered-pricing", "us-south", "--output", "json")), &kp)
	var created map[string]any
	json.Unmarshal([]byte(c.must("kp", "key", "create", "disk", "-i", name+"-kp", "--output", "json")), &created)
	keyCRN := created["resources"].([]any)[0].(map[string]any)["crn"].(string)
	c.must("iam", "authorization-policy-create", "messagehub", "kms", "Reader", "--target-service-instance-id", kp["guid"].(string))
	c.must("resource", "service-instance-create", name, "messagehub", "standard", "us-south", "-p", `{"disk_encryption_key_crn": "`+keyCRN+`"}`)
}

// cliServiceKey creates service credentials with role on the instance.
func cliServiceKey(t *testing.T, c *cli, instance, name, role string) (kafkaCreds, string) {
	t.Helper()
	var key map[string]any
	if err := json.Unmarshal([]byte(c.must("resource", "service-key-create", name, role, "--instance-name", instance)), &key); err != nil {
		t.Fatal(err)
	}
	creds := key["credentials"].(map[string]any)
	kc := kafkaCreds{User: creds["user"].(string), APIKey: creds["api_key"].(string)}
	for _, b := range creds["kafka_brokers_sasl"].([]any) {
		kc.Brokers = append(kc.Brokers, b.(string))
	}
	return kc, key["guid"].(string)
}

// iamToken exchanges an API key for an IAM access token at the token
// endpoint, as an application does.
func iamToken(t testing.TB, base, apikey string) string {
	t.Helper()
	resp, err := http.PostForm(base+"/identity/token", url.Values{"grant_type": {"urn:ibm:params:oauth:grant-type:apikey"}, "apikey": {apikey}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token endpoint: %d %v", resp.StatusCode, err)
	}
	return tok.AccessToken
}

// TestCLIScopedKafkaPoliciesAndIAMTokens gives a service ID roles on one
// deployment's cluster and on topics by prefix with the CLI, then logs in
// with an IAM access token over OAUTHBEARER: the policies decide each
// request. Switching the deployment to IAM tokens only refuses API keys.
func TestCLIScopedKafkaPoliciesAndIAMTokens(t *testing.T) {
	p := serveProcess(t, t.TempDir())
	c := newCLI(t, p.url)
	c.must("login", "--apikey", adminKey)
	cliDeployment(t, c, "es")
	manager, _ := cliServiceKey(t, c, "es", "ops", "Manager")
	for _, topic := range []string{"orders-eu", "payments"} {
		createTopic(t, manager, topic, 1)
	}
	var inst map[string]any
	json.Unmarshal([]byte(c.must("resource", "service-instance", "es", "--output", "json")), &inst)
	guid := inst["guid"].(string)

	var sid map[string]any
	json.Unmarshal([]byte(c.must("iam", "service-id-create", "orders-app", "--output", "json")), &sid)
	iamID := sid["iam_id"].(string)
	var key map[string]any
	json.Unmarshal([]byte(c.must("iam", "service-api-key-create", "orders-app-key", iamID, "--output", "json")), &key)
	apikey, _ := key["apikey"].(string)
	if apikey == "" {
		t.Fatalf("service-api-key-create printed no apikey: %v", key)
	}
	scope := []string{"--service-name", "messagehub", "--service-instance", guid}
	c.must(append([]string{"iam", "service-policy-create", iamID, "--roles", "Reader", "--resource-type", "cluster"}, scope...)...)
	out := c.must(append([]string{"iam", "service-policy-create", iamID, "--roles", "Writer", "--resource-type", "topic", "--resource", "orders-*"}, scope...)...)
	if !strings.Contains(out, "was created") {
		t.Fatalf("service-policy-create:\n%s", out)
	}
	_, errOut, code := c.run(append([]string{"iam", "service-policy-create", iamID, "--roles", "Writer", "--resource-type", "queue"}, scope...)...)
	if code != 1 || !strings.Contains(errOut, `"queue" is not an Event Streams resource type: use cluster, topic, group, txnid`) {
		t.Fatalf("a bad resource type: exit %d\n%s", code, errOut)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(manager.Brokers...), kgo.RetryTimeout(10*time.Second), kgo.DisableIdempotentWrite(),
		kgo.SASL(oauth.Oauth(func(context.Context) (oauth.Auth, error) { return oauth.Auth{Token: iamToken(t, p.url, apikey)}, nil })))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	produceValues(t, cl, "orders-eu", []string{"one"})
	err = cl.ProduceSync(testCtx(t), &kgo.Record{Topic: "payments", Value: []byte("x")}).FirstErr()
	if !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce to a topic no policy names: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}

	// librdkafka (kcat) speaks OAUTHBEARER, but without a token callback it
	// can only send an unsigned token of its own making: refused.
	app := kafkaCreds{Brokers: manager.Brokers, User: "token", APIKey: apikey}
	if _, errOut, err := kcat(t, app, "", "-L", "-m", "5", "-d", "security", "-X", "sasl.mechanisms=OAUTHBEARER", "-X", "enable.sasl.oauthbearer.unsecure.jwt=true", "-X", "sasl.oauthbearer.config=principal=orders-app"); err == nil ||
		!strings.Contains(errOut, "not valid or has expired") {
		t.Fatalf("kcat with an unsecured token: %v\n%s", err, errOut)
	}

	// IAM tokens only: the API key no longer logs in over PLAIN.
	if err := franz(t, app).Ping(testCtx(t)); err != nil {
		t.Fatalf("PLAIN before iam_token_only: %v", err)
	}
	a := &api{t: t, c: client.New(p.url, adminKey)}
	a.must("PATCH", "/v2/resource_instances/"+guid, nil, map[string]any{"parameters": map[string]any{"iam_token_only": true}})
	if err := franz(t, app).Ping(testCtx(t)); err == nil || !strings.Contains(err.Error(), "accepts IAM access tokens only") {
		t.Fatalf("PLAIN with iam_token_only: %v", err)
	}
	if err := cl.Ping(testCtx(t)); err != nil {
		t.Fatalf("OAUTHBEARER with iam_token_only: %v", err)
	}
}
