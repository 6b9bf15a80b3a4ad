package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCLIServiceKeyLifecycle creates Event Streams credentials with the
// CLI, uses them from a Kafka client, lists and shows them, then deletes
// them: the same API key must no longer log in.
func TestCLIServiceKeyLifecycle(t *testing.T) {
	p := serveProcess(t, t.TempDir())
	c := newCLI(t, p.url)
	c.must("login", "--apikey", adminKey)
	var kp map[string]any
	json.Unmarshal([]byte(c.must("resource", "service-instance-create", "kp", "kms", "tiered-pricing", "us-south", "--output", "json")), &kp)
	var created map[string]any
	json.Unmarshal([]byte(c.must("kp", "key", "create", "disk", "-i", "kp", "--output", "json")), &created)
	keyCRN := created["resources"].([]any)[0].(map[string]any)["crn"].(string)
	c.must("iam", "authorization-policy-create", "messagehub", "kms", "Reader", "--target-service-instance-id", kp["guid"].(string))
	c.must("resource", "service-instance-create", "es", "messagehub", "standard", "us-south", "-p", `{"disk_encryption_key_crn": "`+keyCRN+`"}`)

	var key map[string]any
	if err := json.Unmarshal([]byte(c.must("resource", "service-key-create", "app", "Manager", "--instance-name", "es")), &key); err != nil {
		t.Fatal(err)
	}
	creds := key["credentials"].(map[string]any)
	kc := kafkaCreds{User: creds["user"].(string), APIKey: creds["api_key"].(string)}
	for _, b := range creds["kafka_brokers_sasl"].([]any) {
		kc.Brokers = append(kc.Brokers, b.(string))
	}
	createTopic(t, kc, "orders", 1)
	cl := franz(t, kc)
	produceValues(t, cl, "orders", []string{"one"})
	cl.Close()

	if out := c.must("resource", "service-keys", "--instance-name", "es"); !strings.Contains(out, "app") || !strings.Contains(out, "Manager") {
		t.Fatalf("service-keys does not list the key:\n%s", out)
	}
	out := c.must("resource", "service-key", "app")
	if !strings.Contains(out, key["guid"].(string)) || !strings.Contains(out, "Manager") || strings.Contains(out, kc.APIKey) {
		t.Fatalf("service-key shows the wrong key, or its secret:\n%s", out)
	}
	if _, errOut, code := c.run("resource", "service-key", "nothing-by-this-name"); code != 3 {
		t.Fatalf("an unknown service key exits %d, want 3 (not found): %s", code, errOut)
	}

	c.must("resource", "service-key-delete", "app", "-f")
	if out := c.must("resource", "service-keys", "--instance-name", "es"); strings.Contains(out, key["guid"].(string)) && strings.Contains(out, "active") {
		t.Fatalf("the deleted key is still listed as active:\n%s", out)
	}
	if err := franz(t, kc).Ping(testCtx(t)); err == nil {
		t.Fatal("the deleted credentials still log in to Kafka")
	}
}
