package audit

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
)

// API serves the audit events of the caller's account.
type API struct {
	Log   *Log
	Authn auth.Authenticator
	Authz auth.Authorizer
}

// Register adds the routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/audit/events", a.list)
}

// list answers a page of events, newest first, or with follow=true a stream
// of new events as newline-delimited JSON (text/event-stream when asked).
func (a *API) list(w http.ResponseWriter, r *http.Request) {
	ctx, p, err := httpapi.Authenticate(r, a.Authn)
	if err != nil {
		writeError(w, r, err)
		return
	}
	target := Target{ID: "crn:v1:bluemix:public:atracker:global:a/" + p.AccountID + "::", TypeURI: "atracker/events"}
	if err := a.Authz.Authorize(ctx, p, auth.AuditRead, auth.Resource{AccountID: p.AccountID, ServiceName: "atracker"}); err != nil {
		a.Log.Denied(ctx, "atracker.events.read", target, err)
		writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	f := Filter{AccountID: p.AccountID, Action: q.Get("action"), Target: q.Get("target"), Outcome: q.Get("outcome"), Start: q.Get("start")}
	for name, dst := range map[string]*time.Time{"from": &f.From, "to": &f.To} {
		if v := q.Get(name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				writeError(w, r, errs.Ef("audit.list", errs.Invalid, "INVALID_QUERY_PARAM_ERR", "%s must be an RFC 3339 time such as 2026-11-27T10:00:00Z", name).On("query_param", name))
				return
			}
			*dst = t
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, r, errs.E("audit.list", errs.Invalid, "INVALID_QUERY_PARAM_ERR", "limit must be between 1 and 500").On("query_param", "limit"))
			return
		}
		f.Limit = n
	}
	if q.Get("follow") == "true" {
		a.follow(w, r, f)
		return
	}
	page, err := a.Log.Query(ctx, f)
	if err != nil {
		writeError(w, r, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, page)
}

func (a *API) follow(w http.ResponseWriter, r *http.Request, f Filter) {
	events, err := a.Log.Follow(r.Context(), f)
	if err != nil {
		writeError(w, r, err)
		return
	}
	sse := r.Header.Get("Accept") == "text/event-stream"
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	for ev := range events {
		b, _ := json.Marshal(ev)
		if sse {
			w.Write([]byte("data: "))
		}
		w.Write(b)
		if sse {
			w.Write([]byte("\n"))
		}
		w.Write([]byte("\n"))
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

// writeError answers in IBM's platform error format.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	httpapi.WritePlatformError(w, r, nil, "audit", err)
}
