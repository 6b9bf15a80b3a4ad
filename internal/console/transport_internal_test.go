package console

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/httpapi"
)

// throughConsole runs call inside a request that came from a browser, as
// console handlers do.
func throughConsole(t *testing.T, call func(r *http.Request)) {
	t.Helper()
	browser := httptest.NewRequest("GET", "/console/", nil)
	browser.RemoteAddr = "192.0.2.7:5555"
	browser.Header.Set("User-Agent", "Browser/1.0")
	browser.Header.Set("Correlation-Id", "corr-1")
	httpapi.Middleware(nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { call(r) })).ServeHTTP(httptest.NewRecorder(), browser)
}

func TestInProcessCallsCarryTheBrowsersAddressAgentAndCorrelation(t *testing.T) {
	var seen httpapi.RequestInfo
	api := httpapi.Middleware(nil, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = httpapi.Info(r.Context())
		w.WriteHeader(http.StatusTeapot)
		io.WriteString(w, "short and stout")
	}))
	throughConsole(t, func(r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), "GET", "http://keyline.console/v1/x?y=1", nil)
		resp, err := inProcess{api: api}.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusTeapot || string(body) != "short and stout" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	if seen.ClientIP != "192.0.2.7" || seen.UserAgent != "Browser/1.0" || seen.CorrelationID != "corr-1" || seen.URI != "/v1/x" {
		t.Fatalf("the API saw %+v", seen)
	}
}

func TestInProcessStreamsAndStopsWhenTheReaderCloses(t *testing.T) {
	stopped := make(chan struct{})
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(stopped)
		w.Header().Set("Content-Type", "text/event-stream")
		rc := http.NewResponseController(w)
		for i := 0; ; i++ {
			io.WriteString(w, "data: tick\n\n")
			if rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	})
	req, _ := http.NewRequest("GET", "http://keyline.console/v1/audit/events?follow=true", nil)
	resp, err := inProcess{api: api}.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: tick\n" {
		t.Fatalf("first line %q, %v: the answer did not stream", line, err)
	}
	resp.Body.Close()
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler kept streaming after the reader closed the body")
	}
}

func TestInProcessTurnsAPanicIntoAFailedCall(t *testing.T) {
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("bug") })
	req, _ := http.NewRequest("GET", "http://keyline.console/v1/x", nil)
	resp, err := inProcess{api: api}.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	_, rerr := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusInternalServerError || rerr == nil || !strings.Contains(rerr.Error(), "panicked") {
		t.Fatalf("got %d, read error %v", resp.StatusCode, rerr)
	}
}
