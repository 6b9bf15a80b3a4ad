package console

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keyline/keyline/internal/auth"
)

// instance is a resource instance as the Resource Controller v2 API shows it.
type instance struct {
	ID             string         `json:"id"`
	GUID           string         `json:"guid"`
	CRN            string         `json:"crn"`
	Name           string         `json:"name"`
	RegionID       string         `json:"region_id"`
	ResourcePlanID string         `json:"resource_plan_id"`
	SubType        string         `json:"sub_type"`
	State          string         `json:"state"`
	StateReason    string         `json:"state_reason"`
	Locked         bool           `json:"locked"`
	Parameters     map[string]any `json:"parameters"`
	Extensions     map[string]any `json:"extensions"`
	CreatedAt      *time.Time     `json:"created_at"`
	CreatedBy      string         `json:"created_by"`
	UpdatedAt      *time.Time     `json:"updated_at"`
	DeletedAt      *time.Time     `json:"deleted_at"`
	ScheduledAt    *time.Time     `json:"scheduled_reclaim_at"`
	LastOperation  struct {
		Type        string   `json:"type"`
		State       string   `json:"state"`
		Description string   `json:"description"`
		Warnings    []string `json:"warnings"`
	} `json:"last_operation"`
}

// Service is the instance's CRN service name (RC's sub_type).
func (i instance) Service() string {
	if i.SubType != "" {
		return i.SubType
	}
	return crnService(i.CRN)
}

// Plan is the plan's name when the API says it, else its id.
func (i instance) Plan() string {
	if s := extString(i.Extensions, "plan_name"); s != "" {
		return s
	}
	if n, ok := planNames[i.ResourcePlanID]; ok {
		return n
	}
	return i.ResourcePlanID
}

// planNames names the catalog's plan ids for display only.
var planNames = map[string]string{
	"eedd3585-90c6-4c8f-be3d-062069e99fc3": "tiered-pricing",
	"eventstreams-gen2-standard":           "standard",
	"eventstreams-gen2-enterprise":         "enterprise",
}

// Condition is the state badge text: the API's state, named for what the
// API's reason says happened to the key (display only: the state is the API's).
func (i instance) Condition() string {
	if i.State == "inactive" {
		r := strings.ToLower(i.StateReason)
		switch {
		case strings.Contains(r, "was deleted") || strings.Contains(r, "purged"):
			return "disabled: key deleted"
		case strings.Contains(r, "is disabled"):
			return "locked: key disabled"
		case strings.Contains(r, "authorized"):
			return "locked: not authorized"
		}
		return "locked"
	}
	return strings.ReplaceAll(i.State, "_", " ")
}

// Reason says why the instance is in its state, as the API explains it.
func (i instance) Reason() string {
	if i.StateReason != "" {
		return sentence(i.StateReason)
	}
	if i.State != "active" && i.LastOperation.Description != "" {
		return sentence(i.LastOperation.Description)
	}
	return ""
}

// sentence phrases an API's message for people: APIs answer in lower case
// without a full stop ("the key was deleted"), a page shows a sentence.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return ""
	}
	r, n := utf8.DecodeRuneInString(s)
	s = string(unicode.ToUpper(r)) + s[n:]
	if !strings.ContainsAny(s[len(s)-1:], ".!?") {
		s += "."
	}
	return s
}

// DiskKey and BackupKey are the deployment's key CRNs, wherever the API puts them.
func (i instance) DiskKey() string {
	return firstString(i.Parameters["disk_encryption_key_crn"], dig(i.Extensions, "dataservices", "encryption", "disk"), dig(i.Extensions, "encryption", "disk"))
}

func (i instance) BackupKey() string {
	return firstString(i.Parameters["backup_encryption_key_crn"], dig(i.Extensions, "dataservices", "encryption", "backup"), dig(i.Extensions, "encryption", "backup"))
}

// Deployment and KMS say what kind of instance it is.
func (i instance) Deployment() bool { return i.Service() == "messagehub" }
func (i instance) KMS() bool        { return i.Service() == "kms" }

// Href is the console page of the instance.
func (i instance) Href() string {
	if i.KMS() {
		return "/console/kms/" + url.PathEscape(i.GUID)
	}
	return "/console/deployments/" + url.PathEscape(i.GUID)
}

func extString(m map[string]any, k string) string {
	s, _ := m[k].(string)
	return s
}

func dig(m map[string]any, path ...string) any {
	var v any = m
	for _, p := range path {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[p]
	}
	return v
}

func firstString(vs ...any) string {
	for _, v := range vs {
		if s, ok := v.(string); ok && s != "" {
			return s
		}
	}
	return ""
}

type instanceList struct {
	Resources []instance `json:"resources"`
	NextURL   *string    `json:"next_url"`
}

// instanceStates are the states the dashboard asks for beyond the default
// (active and provisioning): RC's list hides them unless asked by name.
var instanceStates = []string{"", "inactive", "pending_reclamation", "failed"}

// listInstances lists the account's instances in every state the console
// shows, following pages. A state the API does not know is skipped.
func listInstances(ctx context.Context, api *caller, query url.Values) ([]instance, error) {
	seen := map[string]bool{}
	var all []instance
	for _, state := range instanceStates {
		q := url.Values{}
		for k, v := range query {
			q[k] = v
		}
		if state != "" {
			q.Set("state", state)
		}
		path := "/v2/resource_instances?" + q.Encode()
		for pages := 0; path != "" && pages < 50; pages++ {
			var page instanceList
			if err := api.get(ctx, path, &page); err != nil {
				if state != "" && apiError(err).Status == http.StatusBadRequest {
					break
				}
				return nil, err
			}
			for _, in := range page.Resources {
				if !seen[in.GUID] {
					seen[in.GUID] = true
					all = append(all, in)
				}
			}
			path = ""
			if page.NextURL != nil {
				path = *page.NextURL
			}
		}
	}
	slices.SortFunc(all, func(a, b instance) int { return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name)) })
	return all, nil
}

func (c *Console) dashboard(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	all, err := listInstances(r.Context(), api, nil)
	v := view{Title: "Resource list", Nav: "resources"}
	if err != nil {
		v.Err = apiError(err)
	}
	var kms, streams []instance
	for _, in := range all {
		switch {
		case in.KMS():
			kms = append(kms, in)
		case in.Deployment():
			streams = append(streams, in)
		}
	}
	v.Data = map[string]any{"KMS": kms, "Streams": streams,
		"CanCreate": c.can(r.Context(), s, auth.InstanceCreate, auth.Resource{ServiceName: "messagehub"})}
	c.render(w, r, s, http.StatusOK, "dashboard", v)
}

func crnService(s string) string {
	parts := strings.Split(s, ":")
	if len(parts) > 4 {
		return parts[4]
	}
	return ""
}
