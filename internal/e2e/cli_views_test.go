package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/controller"
)

// TestCLIShowsWhatAPersonNeeds: -a takes host:port, a locked deployment is
// listed with its state, the create help has a whole example and the
// backup-region advice, and events --follow starts with the last events.
func TestCLIShowsWhatAPersonNeeds(t *testing.T) {
	e := start(t)
	c := newCLI(t, "") // no KEYLINE_ENDPOINT: the login's endpoint is used
	c.must("login", "--apikey", adminKey, "-a", strings.TrimPrefix(e.url, "http://"))

	c.must("resource", "service-instance-create", "kp", "kms", "tiered-pricing", "us-south")
	var created map[string]any
	json.Unmarshal([]byte(c.must("kp", "key", "create", "disk", "-i", "kp", "--output", "json")), &created)
	key := created["resources"].([]any)[0].(map[string]any)
	id, keyCRN := key["id"].(string), key["crn"].(string)
	if out := c.must("kp", "key", "show", id, "-i", "kp"); !strings.Contains(out, keyCRN) {
		t.Fatalf("kp key show does not print the CRN:\n%s", out)
	}
	c.must("iam", "authorization-policy-create", "messagehub", "kms", "Reader", "--target-service-instance-id", "kp")
	c.must("resource", "service-instance-create", "es", "messagehub", "standard", "us-south", "-p", `{"disk_encryption_key_crn": "`+keyCRN+`"}`)

	// Disabling the key locks the deployment: it stays listed, as inactive.
	c.must("kp", "key", "disable", id, "-i", "kp")
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := c.must("resource", "service-instances")
		line := ""
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "es ") {
				line = l
			}
		}
		if strings.Contains(line, "inactive") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the locked deployment is not listed as inactive:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	help := c.must("resource", "service-instance-create", "--help")
	for _, want := range []string{controller.BackupRegionAdvice, `"backup_encryption_key_crn": "crn:v1:bluemix:public:kms:eu-de:a/`, "kp keys -i INSTANCE"} {
		if !strings.Contains(help, want) {
			t.Fatalf("service-instance-create --help lacks %q:\n%s", want, help)
		}
	}

	// --follow prints the last events at once, then new ones.
	cmd := exec.Command(binary(t), "events", "--follow", "--action", "kms.secrets.*", "--tail", "3")
	cmd.Env = append(os.Environ(), "KEYLINE_HOME="+c.home)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var mu sync.Mutex
	var lines []string
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
		}
	}()
	waitFor := func(action string) []string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			got := append([]string(nil), lines...)
			mu.Unlock()
			for _, l := range got {
				if strings.Contains(l, action) {
					return got
				}
			}
			time.Sleep(100 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("events --follow did not show %s:\n%s", action, strings.Join(lines, "\n"))
		return nil
	}
	if got := waitFor("kms.secrets.disable"); len(got) != 3 {
		t.Fatalf("--tail 3 printed %d events:\n%s", len(got), strings.Join(got, "\n"))
	}
	c.must("kp", "key", "enable", id, "-i", "kp")
	waitFor("kms.secrets.enable")
}
