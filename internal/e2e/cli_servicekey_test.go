package e2e

import (
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
	cliDeployment(t, c, "es")
	kc, keyGUID := cliServiceKey(t, c, "es", "app", "Manager")
	createTopic(t, kc, "orders", 1)
	cl := franz(t, kc)
	produceValues(t, cl, "orders", []string{"one"})
	cl.Close()

	if out := c.must("resource", "service-keys", "--instance-name", "es"); !strings.Contains(out, "app") || !strings.Contains(out, "Manager") {
		t.Fatalf("service-keys does not list the key:\n%s", out)
	}
	out := c.must("resource", "service-key", "app")
	if !strings.Contains(out, keyGUID) || !strings.Contains(out, "Manager") || strings.Contains(out, kc.APIKey) {
		t.Fatalf("service-key shows the wrong key, or its secret:\n%s", out)
	}
	if _, errOut, code := c.run("resource", "service-key", "nothing-by-this-name"); code != 3 {
		t.Fatalf("an unknown service key exits %d, want 3 (not found): %s", code, errOut)
	}

	c.must("resource", "service-key-delete", "app", "-f")
	if out := c.must("resource", "service-keys", "--instance-name", "es"); strings.Contains(out, keyGUID) && strings.Contains(out, "active") {
		t.Fatalf("the deleted key is still listed as active:\n%s", out)
	}
	if err := franz(t, kc).Ping(testCtx(t)); err == nil {
		t.Fatal("the deleted credentials still log in to Kafka")
	}
}
