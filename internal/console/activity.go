package console

import (
	"io"
	"net/http"
	"net/url"
	"strings"
)

// event is the part of a CADF Activity Tracker event the console shows.
type event struct {
	ID        string `json:"id"`
	EventTime string `json:"eventTime"`
	Action    string `json:"action"`
	Outcome   string `json:"outcome"`
	Message   string `json:"message"`
	Severity  string `json:"severity"`
	Initiator struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"initiator"`
	Target struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	} `json:"target"`
	Reason struct {
		ReasonCode       int    `json:"reasonCode"`
		ReasonForFailure string `json:"reasonForFailure"`
	} `json:"reason"`
}

// Who names the initiator for people: a service that acted on its own
// (Block Storage creating its backups' authorization, say) is recorded by
// its short service name, which the console spells out.
func (e event) Who() string {
	who := e.Initiator.Name
	if who == "" {
		who = e.Initiator.ID
	}
	if d, ok := serviceNames[who]; ok {
		return d + " (" + who + ")"
	}
	return who
}

// activityQuery keeps only the filters the audit API knows.
func activityQuery(in url.Values) url.Values {
	q := url.Values{}
	for _, k := range []string{"action", "target", "outcome", "start"} {
		if v := strings.TrimSpace(in.Get(k)); v != "" {
			q.Set(k, v)
		}
	}
	return q
}

func (c *Console) activity(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	q := activityQuery(r.URL.Query())
	v := view{Title: "Activity Tracker", Nav: "activity"}
	var page struct {
		Events []event `json:"events"`
		Next   string  `json:"next"`
	}
	if err := api.get(r.Context(), "/v1/audit/events?"+q.Encode(), &page); err != nil {
		v.Err = apiError(err)
	}
	follow := activityQuery(r.URL.Query())
	follow.Del("start")
	next := ""
	if page.Next != "" {
		nq := activityQuery(r.URL.Query())
		nq.Set("start", page.Next)
		next = "/console/activity?" + nq.Encode()
	}
	v.Data = map[string]any{"Events": page.Events, "Filter": map[string]string{"Action": q.Get("action"), "Target": q.Get("target"), "Outcome": q.Get("outcome")},
		"StreamURL": "/console/activity/stream?" + follow.Encode(), "Next": next}
	c.render(w, r, s, http.StatusOK, "activity", v)
}

// activityStream proxies the audit API's follow mode as server-sent events,
// so the browser's EventSource gets new events as they are recorded
// without ever holding the bearer token.
func (c *Console) activityStream(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	q := activityQuery(r.URL.Query())
	q.Del("start")
	q.Set("follow", "true")
	resp, err := api.stream(r.Context(), "/v1/audit/events?"+q.Encode())
	if err != nil {
		http.Error(w, "the event stream could not be opened", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// EventSource treats any non-200 as fatal; pass the API's status on.
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, io.LimitReader(resp.Body, 64<<10))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	rc.Flush()
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
