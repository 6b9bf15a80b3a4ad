package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIFollowsTheSeed runs the built binary: `keyline serve` as a process
// and the ibmcloud-shaped commands the seed prints, as a script would.
func TestCLIFollowsTheSeed(t *testing.T) {
	dir := t.TempDir()
	p := serveProcess(t, dir)
	c := newCLI(t, p.url)

	if _, _, code := c.run("kp", "keys", "-i", "nothing"); code == 0 {
		t.Fatal("a command before login succeeded")
	}
	if _, _, code := c.run("resource", "service-instance-create", "only-a-name"); code != 2 {
		t.Fatalf("wrong arguments exit %d, want 2 (usage)", code)
	}
	c.must("login", "--apikey", adminKey)

	var kp map[string]any
	json.Unmarshal([]byte(c.must("resource", "service-instance-create", "my-kp", "kms", "tiered-pricing", "us-south", "--output", "json")), &kp)
	guid, _ := kp["guid"].(string)
	if guid == "" {
		t.Fatalf("service-instance-create printed no guid: %v", kp)
	}
	var created map[string]any
	json.Unmarshal([]byte(c.must("kp", "key", "create", "my-root-key", "-i", guid, "--output", "json")), &created)
	key := created["resources"].([]any)[0].(map[string]any)
	keyCRN := key["crn"].(string)
	if out := c.must("kp", "keys", "-i", "my-kp"); !strings.Contains(out, "my-root-key") || !strings.Contains(out, "Active") {
		t.Fatalf("kp keys:\n%s", out)
	}

	// The seed's provisioning command fails without the authorization, then works.
	params := `{"disk_encryption_key_crn": "` + keyCRN + `"}`
	out, errOut, code := c.run("resource", "service-instance-create", "my-es", "messagehub", "standard", "us-south", "-p", params)
	if code != 1 || !strings.Contains(errOut, "Authorization") {
		t.Fatalf("provisioning without authorization: exit %d\n%s%s", code, out, errOut)
	}
	c.must("iam", "authorization-policy-create", "messagehub", "kms", "Reader,AuthorizationDelegator", "--target-service-instance-id", guid)
	if out := c.must("iam", "authorization-policies"); !strings.Contains(out, "User defined") || !strings.Contains(out, "messagehub") {
		t.Fatalf("authorization-policies:\n%s", out)
	}
	out = c.must("resource", "service-instance-create", "my-es", "messagehub", "standard", "us-south", "-p", params)
	if !strings.Contains(out, keyCRN) || !strings.Contains(out, "active") {
		t.Fatalf("service-instance-create messagehub:\n%s", out)
	}
	if out := c.must("kp", "registrations", "-i", guid); !strings.Contains(out, "messagehub") {
		t.Fatalf("kp registrations does not show the deployment:\n%s", out)
	}
	// -f only skips the question: a registered key needs --force-delete.
	_, errOut, code = c.run("kp", "key", "delete", key["id"].(string), "-i", guid, "-f")
	if code != 1 || !strings.Contains(errOut, "PROTECTED_RESOURCE_ERR") || !strings.Contains(errOut, "--force-delete") {
		t.Fatalf("deleting a registered key: exit %d: %s", code, errOut)
	}
	if _, _, code := c.run("resource", "service-instance", "no-such-thing"); code != 3 {
		t.Fatalf("a missing instance exits %d, want 3", code)
	}
	if out := c.must("events", "--action", "kms.secrets.*"); !strings.Contains(out, "kms.secrets.create") {
		t.Fatalf("events:\n%s", out)
	}

	// The admin key file was written owner-only, and never appears in the logs.
	for _, name := range []string{"master.key", "keyline.db"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s must be owner-only: %v %v", name, st, err)
		}
	}
	if strings.Contains(p.logs(), adminKey) {
		t.Fatal("the server logged the admin API key")
	}
}
