package ratelog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestLimiterSummarizesAFlood(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	l := Limiter{Every: 50 * time.Millisecond}
	for range 1000 {
		l.Log(log, slog.LevelWarn, "refused")
	}
	if n := strings.Count(buf.String(), "\n"); n != 1 {
		t.Fatalf("%d lines for a burst, want 1:\n%s", n, buf.String())
	}
	time.Sleep(60 * time.Millisecond) // past the interval: the next line goes out
	l.Log(log, slog.LevelWarn, "refused")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "suppressed=999") {
		t.Fatalf("second line does not count the held-back ones:\n%s", buf.String())
	}
}
