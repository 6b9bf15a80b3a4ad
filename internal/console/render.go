package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/crn"
)

// view is what every page template gets.
type view struct {
	Title string
	Nav   string // the left-nav entry to mark current
	User  *auth.Principal
	CSRF  string
	Flash string
	Err   *client.Error // a failed API call, shown above the content
	// ErrHelp is a hint under Err, e.g. a link to what would fix it.
	ErrHelpText, ErrHelpURL string
	Data                    any
}

type pageTemplate struct{ t *template.Template }

// parsePages parses each page template together with the shared layout.
func parsePages(fsys fs.FS) (map[string]pageTemplate, error) {
	names, err := fs.Glob(fsys, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]pageTemplate{}
	for _, n := range names {
		base := strings.TrimSuffix(path.Base(n), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New(base).Funcs(funcs).ParseFS(fsys, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", n, err)
		}
		pages[base] = pageTemplate{t: t}
	}
	return pages, nil
}

// render writes a page. A nil session renders the signed-out layout.
func (c *Console) render(w http.ResponseWriter, r *http.Request, s *session, status int, name string, v view) {
	if s != nil {
		v.User = &s.principal
		v.CSRF = s.csrf
		if v.Flash == "" {
			v.Flash = c.sessions.takeFlash(s)
		}
	}
	p, ok := c.pages[name]
	if !ok {
		http.Error(w, "console: no template "+name, http.StatusInternalServerError)
		return
	}
	var buf bytes.Buffer
	if err := p.t.ExecuteTemplate(&buf, "layout", v); err != nil {
		c.cfg.Logger.Error("console: rendering failed", "page", name, "err", err)
		http.Error(w, "The page could not be rendered.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// renderError shows a full error page with status.
func (c *Console) renderError(w http.ResponseWriter, r *http.Request, s *session, status int, title, msg string) {
	c.render(w, r, s, status, "error", view{Title: title, Data: map[string]any{"Status": status, "Message": msg}})
}

// renderAPIError shows a failed API call as an error page with the API's status.
func (c *Console) renderAPIError(w http.ResponseWriter, r *http.Request, s *session, err error) {
	e := apiError(err)
	title := "Request failed"
	switch e.Status {
	case http.StatusForbidden:
		title = "Not authorized"
	case http.StatusNotFound:
		title = "Not found"
	case http.StatusConflict:
		title = "Not possible now"
	case http.StatusUnauthorized:
		title = "Signed out"
	}
	c.render(w, r, s, e.Status, "error", view{Title: title, Err: e, Data: map[string]any{"Status": e.Status}})
}

var funcs = template.FuncMap{
	"roleName": auth.RoleDisplayName,
	"when":     when,
	"stateBadge": func(state string) string {
		switch {
		case strings.HasPrefix(state, "locked"):
			return "warn"
		case strings.HasPrefix(state, "disabled:"):
			return "bad"
		}
		switch state {
		case "active", "completed", "succeeded", "Active":
			return "ok"
		case "provisioning", "running", "queued", "in progress":
			return "info"
		case "pending_reclamation", "pending reclamation", "Suspended", "Deactivated", "locked":
			return "warn"
		case "inactive", "failed", "removed", "Destroyed", "disabled", "expired":
			return "bad"
		}
		return "neutral"
	},
	"shortCRN": shortCRN,
	// shortID is the start of a UUID, enough to tell versions apart at a glance.
	"shortID": func(id string) string {
		if len(id) > 8 {
			return id[:8] + "…"
		}
		return id
	},
	"serviceName": serviceDisplayName,
	"list":        func(v ...string) []string { return v },
	// pathEscape makes a name one segment of a URL path (group IDs may
	// hold any character).
	"pathEscape": url.PathEscape,
	// dict passes named values to a shared template: dict "Key" value ...
	"dict": func(kv ...any) (map[string]any, error) {
		if len(kv)%2 != 0 {
			return nil, fmt.Errorf("dict needs key and value pairs")
		}
		m := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			k, ok := kv[i].(string)
			if !ok {
				return nil, fmt.Errorf("dict keys must be strings")
			}
			m[k] = kv[i+1]
		}
		return m, nil
	},
	"json": func(v any) string {
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return ""
		}
		return string(b)
	},
}

// shortCRN keeps the distinguishing end of a CRN for narrow cells; the full
// CRN stays in the title attribute.
func shortCRN(s string) string {
	c, err := crn.Parse(s)
	if err != nil {
		return s
	}
	if c.Resource != "" {
		return c.ServiceName + " … " + c.ResourceType + ":" + c.Resource
	}
	return c.ServiceName + ":" + c.Location + " … " + c.ServiceInstance
}

func when(t any) string {
	var tt time.Time
	switch v := t.(type) {
	case time.Time:
		tt = v
	case *time.Time:
		if v == nil {
			return "—"
		}
		tt = *v
	case string:
		if v == "" {
			return "—"
		}
		p, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			if p, err = time.Parse("2006-01-02T15:04:05.00-0700", v); err != nil {
				return v
			}
		}
		tt = p
	default:
		return "—"
	}
	if tt.IsZero() {
		return "—"
	}
	return tt.UTC().Format("2006-01-02 15:04:05 UTC")
}

// Services as the console names them.
var serviceNames = map[string]string{
	"kms":                  "Key Protect",
	"messagehub":           "Event Streams",
	"is":                   "Block Storage for VPC",
	"cloud-object-storage": "Cloud Object Storage",
}

func serviceDisplayName(name string) string {
	if d, ok := serviceNames[name]; ok {
		return d
	}
	if name == "" {
		return "All services"
	}
	return name
}
