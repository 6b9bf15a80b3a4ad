package httpapi

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestRedactPathHidesThePathFromTheAccessLog(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	h := Middleware(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/topics/") {
			RedactPath(r.Context(), "/topics/{name}")
		}
	}))
	for _, path := range []string{"/topics/secret-name", "/plain"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	out := logs.String()
	if strings.Contains(out, "secret-name") || !strings.Contains(out, "path=/topics/{name}") || !strings.Contains(out, "path=/plain") {
		t.Fatalf("access log:\n%s", out)
	}
}

// TestRedactPathReachesTheAccessLogThroughADerivedContext: a handler that
// gave its context another correlation id still redacts the request's
// logged path, and the derived context carries the request's info.
func TestRedactPathReachesTheAccessLogThroughADerivedContext(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, nil))
	h := Middleware(logger, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := WithCorrelationID(r.Context(), "derived-id")
		if ri := Info(ctx); ri.CorrelationID != "derived-id" || ri.URI != "/topics/secret-name" || ri.Method != "GET" {
			t.Errorf("derived info %+v", ri)
		}
		RedactPath(ctx, "/topics/{name}")
	}))
	r := httptest.NewRequest("GET", "/topics/secret-name", nil)
	r.Header.Set("Correlation-Id", "request-id")
	h.ServeHTTP(httptest.NewRecorder(), r)
	out := logs.String()
	if strings.Contains(out, "secret-name") || !strings.Contains(out, "path=/topics/{name}") || !strings.Contains(out, "correlation_id=request-id") {
		t.Fatalf("access log:\n%s", out)
	}
	if ri := Info(WithCorrelationID(t.Context(), "outside")); ri.CorrelationID != "outside" {
		t.Fatalf("outside a request: %+v", ri)
	}
	RedactPath(t.Context(), "/nothing") // outside a request: no effect, no panic
}
