package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// walk calls fn on cmd and every command below it.
func walk(cmd *cobra.Command, fn func(*cobra.Command)) {
	fn(cmd)
	for _, sub := range cmd.Commands() {
		walk(sub, fn)
	}
}

// A backquoted word in a flag's usage becomes its value name in the help
// ("-a, --api-endpoint keyline login"): none is meant anywhere.
func TestNoFlagHelpTakesAValueNameFromBackquotes(t *testing.T) {
	root := newRoot(io.Discard, io.Discard)
	flags := 0
	walk(root, func(cmd *cobra.Command) {
		check := func(f *pflag.Flag) {
			flags++
			if strings.Contains(f.Usage, "`") {
				name, _ := pflag.UnquoteUsage(f)
				t.Errorf("%s --%s: its usage has a backquote, so its help reads %q: %q", cmd.CommandPath(), f.Name, "--"+f.Name+" "+name, f.Usage)
			}
		}
		cmd.LocalFlags().VisitAll(check)
	})
	if flags < 50 {
		t.Fatalf("only %d flags were checked", flags)
	}
	var out bytes.Buffer
	root = newRoot(&out, &out)
	root.SetArgs([]string{"kp", "keys", "--help"})
	root.Execute()
	if strings.Contains(out.String(), "--api-endpoint keyline") {
		t.Fatalf("help:\n%s", out.String())
	}
}

func TestTyposAndBadOutputFormatsAreUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"kp", "key", "delte", "x"}, []string{`unknown command "delte" for "keyline kp key"`, "Did you mean this?", "delete"}},
		{[]string{"kp", "kyes"}, []string{`unknown command "kyes" for "keyline kp"`, "keys"}},
		{[]string{"resource", "service-instnces"}, []string{"unknown command", "service-instances"}},
		{[]string{"iam", "nothing-like-it"}, []string{`unknown command "nothing-like-it" for "keyline iam"`}},
		{[]string{"kp", "keys", "--output", "yaml", "-i", "x"}, []string{"--output yaml", "json"}},
		{[]string{"events", "--output", "table"}, []string{"--output table"}},
		{[]string{"events", "--since", "yesterday"}, []string{"--since yesterday", "duration"}},
		{[]string{"kp", "keys", "-a", "http://", "-i", "x"}, []string{"not a Keyline endpoint"}},
	} {
		code, errOut := runCLI(t, tc.args...)
		if code != exitUsage {
			t.Errorf("keyline %s: exit %d, want %d\n%s", strings.Join(tc.args, " "), code, exitUsage, errOut)
		}
		for _, w := range tc.want {
			if !strings.Contains(errOut, w) {
				t.Errorf("keyline %s: %q is not in\n%s", strings.Join(tc.args, " "), w, errOut)
			}
		}
	}
	// A group named alone still shows its commands.
	if code, errOut := runCLI(t, "kp", "key"); code != exitOK {
		t.Fatalf("keyline kp key: exit %d\n%s", code, errOut)
	}
}

func TestEndpointWithoutScheme(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8080":              "http://127.0.0.1:8080",
		"localhost:9000":              "http://localhost:9000",
		"[::1]:8080":                  "http://[::1]:8080",
		"keyline.example.com:8443":    "https://keyline.example.com:8443",
		"keyline.example.com":         "https://keyline.example.com",
		"10.1.2.3:8080":               "https://10.1.2.3:8080",
		"http://keyline.example.com/": "http://keyline.example.com",
		"https://127.0.0.1:8443":      "https://127.0.0.1:8443",
	} {
		got, err := endpointURL(in)
		if err != nil || got != want {
			t.Errorf("endpointURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"ftp://host", "http://", "https:// x"} {
		if got, err := endpointURL(bad); err == nil {
			t.Errorf("endpointURL(%q) = %q, want an error", bad, got)
		}
	}
}

func TestSince(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]string{"": "", "90m": "2026-03-01T10:30:00Z", "2026-02-27T08:00:00+01:00": "2026-02-27T07:00:00Z"} {
		if got, err := sinceTime(in, now); err != nil || got != want {
			t.Errorf("sinceTime(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// A completed task's bar ends full, whatever its last progress report said.
func TestFinishedTaskBarIsFull(t *testing.T) {
	var out bytes.Buffer
	c := &cli{out: &out}
	c.drawTask(&out, map[string]any{"status": "completed", "progress_percent": float64(92), "description": "Rotating"})
	if !strings.Contains(out.String(), "] 100%") || strings.Contains(out.String(), "-") {
		t.Fatalf("bar of a completed task: %q", out.String())
	}
	if got := taskPercent(map[string]any{"status": "running", "progress_percent": float64(40)}); got != 40 {
		t.Fatalf("running task at %d%%", got)
	}
}
