package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"
)

// runTTY runs keyline args with a terminal as stdin, stdout and stderr,
// waits for the confirmation question and types answer. It returns what
// the terminal showed and the exit code.
func (c *cli) runTTY(answer string, args ...string) (string, int) {
	c.t.Helper()
	cmd := exec.Command(binary(c.t), args...)
	cmd.Env = append(append(os.Environ(), "KEYLINE_HOME="+c.home, "KEYLINE_ENDPOINT="+c.url), c.env...)
	tty, err := pty.Start(cmd)
	if err != nil {
		c.t.Fatal(err)
	}
	defer tty.Close()
	var mu sync.Mutex
	var screen bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	shown := func() string { mu.Lock(); defer mu.Unlock(); return screen.String() }
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(shown(), "[y/N]") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			c.t.Fatalf("keyline %s asked nothing:\n%s", strings.Join(args, " "), shown())
		}
		time.Sleep(20 * time.Millisecond)
	}
	io.WriteString(tty, answer+"\n")
	err = cmd.Wait()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatal(err)
	}
	tty.Close()
	<-done
	return shown(), code
}

// TestCLIDestructiveCommandsConfirm: every destructive command asks on a
// terminal, refuses without -f when nobody can answer, and does nothing
// unless the answer is yes.
func TestCLIDestructiveCommandsConfirm(t *testing.T) {
	e := start(t)
	c := newCLI(t, e.url)
	c.must("login", "--apikey", adminKey)
	c.must("resource", "service-instance-create", "kp-a", "kms", "tiered-pricing", "us-south")
	var created map[string]any
	json.Unmarshal([]byte(c.must("kp", "key", "create", "k1", "-i", "kp-a", "--output", "json")), &created)
	key := created["resources"].([]any)[0].(map[string]any)
	id, keyCRN := key["id"].(string), key["crn"].(string)
	active := func() bool {
		out := c.must("kp", "keys", "-i", "kp-a")
		return strings.Contains(out, id) && strings.Contains(out, "Active")
	}

	// kp keys prints each key's full CRN, ready to paste.
	if out := c.must("kp", "keys", "-i", "kp-a"); !strings.Contains(out, keyCRN) {
		t.Fatalf("kp keys does not print the key's CRN:\n%s", out)
	}

	// No terminal: refused, with what to do.
	_, errOut, code := c.run("kp", "key", "delete", id, "-i", "kp-a")
	if code != 2 || !strings.Contains(errOut, "not a terminal") || !strings.Contains(errOut, "-f") {
		t.Fatalf("kp key delete without a terminal: exit %d: %s", code, errOut)
	}
	if !active() {
		t.Fatal("the key was deleted without confirmation")
	}
	// A terminal: no keeps the key, yes deletes it.
	if shown, code := c.runTTY("n", "kp", "key", "delete", id, "-i", "kp-a"); code != 1 || !strings.Contains(shown, "Delete key "+id) {
		t.Fatalf("answering n: exit %d:\n%s", code, shown)
	}
	if !active() {
		t.Fatal("answering n deleted the key")
	}
	if shown, code := c.runTTY("y", "kp", "key", "delete", id, "-i", "kp-a"); code != 0 || !strings.Contains(shown, "Deleted key") {
		t.Fatalf("answering y: exit %d:\n%s", code, shown)
	}
	if active() {
		t.Fatal("answering y did not delete the key")
	}

	// Purge: refused within 4 hours of the deletion, then gone for good.
	if _, errOut, code := c.run("kp", "key", "purge", id, "-i", "kp-a"); code != 2 || !strings.Contains(errOut, "not a terminal") {
		t.Fatalf("kp key purge without a terminal: exit %d: %s", code, errOut)
	}
	if _, errOut, code := c.run("kp", "key", "purge", id, "-i", "kp-a", "-f"); code != 1 || !strings.Contains(errOut, "REQ_TOO_EARLY_ERR") {
		t.Fatalf("purging at once: exit %d: %s", code, errOut)
	}
	e.clock.Advance(4*time.Hour + time.Minute)
	if out := c.must("kp", "key", "purge", id, "-i", "kp-a", "-f"); !strings.Contains(out, "Purged key") {
		t.Fatalf("kp key purge:\n%s", out)
	}
	if _, errOut, code := c.run("kp", "key", "show", id, "-i", "kp-a"); code != 3 {
		t.Fatalf("a purged key: exit %d, want 3: %s", code, errOut)
	}
	if out := c.must("kp", "key", "purge", "--help"); !strings.Contains(out, "4 hours") || !strings.Contains(out, "30 days") {
		t.Fatalf("purge help does not say when:\n%s", out)
	}

	// An authorization names its instance by name: the policy holds its GUID.
	var kp map[string]any
	json.Unmarshal([]byte(c.must("resource", "service-instance", "kp-a", "--output", "json")), &kp)
	if _, errOut, code := c.run("iam", "authorization-policy-create", "messagehub", "kms", "Reader", "--target-service-instance-id", "no-such-kp"); code != 3 || !strings.Contains(errOut, "no-such-kp") {
		t.Fatalf("an unknown instance name: exit %d: %s", code, errOut)
	}
	var policy map[string]any
	json.Unmarshal([]byte(c.must("iam", "authorization-policy-create", "messagehub", "kms", "Reader", "--target-service-instance-id", "kp-a", "--output", "json")), &policy)
	if b, _ := json.Marshal(policy["resources"]); !strings.Contains(string(b), kp["guid"].(string)) || strings.Contains(string(b), `"kp-a"`) {
		t.Fatalf("the policy does not name the instance by GUID: %s", b)
	}

	// The other destructive commands refuse without a terminal, then work with -f.
	var sk map[string]any
	json.Unmarshal([]byte(c.must("resource", "service-key-create", "app", "--instance-name", "kp-a")), &sk)
	for _, args := range [][]string{
		{"iam", "authorization-policy-delete", policy["id"].(string)},
		{"resource", "service-key-delete", "app"},
		{"resource", "service-instance-delete", "kp-a"},
	} {
		if _, errOut, code := c.run(args...); code != 2 || !strings.Contains(errOut, "not a terminal") {
			t.Fatalf("keyline %s without a terminal: exit %d: %s", strings.Join(args, " "), code, errOut)
		}
		c.must(append(args, "-f")...)
	}
	var recl map[string]any
	json.Unmarshal([]byte(c.must("resource", "reclamations", "--output", "json")), &recl)
	rid := recl["resources"].([]any)[0].(map[string]any)["id"].(string)
	if _, errOut, code := c.run("resource", "reclamation-delete", rid); code != 2 || !strings.Contains(errOut, "not a terminal") {
		t.Fatalf("reclamation-delete without a terminal: exit %d: %s", code, errOut)
	}
	if shown, code := c.runTTY("no", "resource", "reclamation-delete", rid); code != 1 {
		t.Fatalf("reclamation-delete answered no: exit %d:\n%s", code, shown)
	}
	c.must("resource", "reclamation-delete", rid, "-f")
}
