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
