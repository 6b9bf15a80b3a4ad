package broker

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

const kcatPath = "/usr/bin/kcat"

// kcat runs librdkafka's command line client against tb as "token"/key.
func kcat(t *testing.T, tb testBroker, key, stdin string, args ...string) (string, error) {
	t.Helper()
	if _, err := os.Stat(kcatPath); err != nil {
		t.Skip("kcat is not installed (apt-get install -y kcat)")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	base := []string{"-b", tb.Addr().String(), "-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
		"-X", "sasl.username=token", "-X", "sasl.password=" + key}
	cmd := exec.CommandContext(ctx, kcatPath, append(base, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	if err != nil {
		t.Logf("kcat %v: %v\n%s", args, err, errOut.String())
	}
	return out.String(), err
}

func TestKcatListsProducesAndConsumes(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "telemetry", 2)

	out, err := kcat(t, tb, readerKey, "", "-L")
	if err != nil || !strings.Contains(out, `topic "telemetry" with 2 partitions`) || !strings.Contains(out, "(controller)") {
		t.Fatalf("kcat -L: %v\n%s", err, out)
	}
	lines := []string{"alpha", "bravo", "charlie", "delta"}
	if _, err := kcat(t, tb, writerKey, strings.Join(lines, "\n")+"\n", "-P", "-t", "telemetry", "-X", "enable.idempotence=true"); err != nil {
		t.Fatal(err)
	}
	out, err = kcat(t, tb, readerKey, "", "-C", "-t", "telemetry", "-o", "beginning", "-e", "-f", "%s\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedLines(out); !slices.Equal(got, lines) {
		t.Fatalf("kcat -C read %q, want %q", got, lines)
	}
	if _, err := kcat(t, tb, "wrong-key", "", "-L", "-m", "1"); err == nil {
		t.Fatal("kcat -L with a wrong key succeeded")
	}
}

func TestKcatBalancedConsumerGroup(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "alerts", 2)
	want := []string{"r0000", "r0001", "r0002", "r0003", "r0004", "r0005"}
	produceN(t, tb.client(t, writerKey), "alerts", 0, len(want))
	out, err := kcat(t, tb, readerKey, "", "-G", "kcat-group", "-X", "auto.offset.reset=earliest", "-e", "-f", "%s\n", "alerts")
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedLines(out); !slices.Equal(got, want) {
		t.Fatalf("kcat -G read %q, want %q", got, want)
	}
	if v := tb.groups.describe("kcat-group"); v.state == groupDead {
		t.Fatal("the group kcat joined is unknown")
	}
}

func sortedLines(s string) []string {
	lines := strings.Fields(s)
	slices.Sort(lines)
	return lines
}
