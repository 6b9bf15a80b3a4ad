package console

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/auth"
)

// key is a Key Protect key as GET /api/v2/keys shows it.
type key struct {
	ID             string     `json:"id"`
	Name           string     `json:"name"`
	CRN            string     `json:"crn"`
	State          int        `json:"state"`
	Extractable    bool       `json:"extractable"`
	Imported       bool       `json:"imported"`
	CreationDate   *time.Time `json:"creationDate"`
	LastRotateDate *time.Time `json:"lastRotateDate"`
	DeletionDate   *time.Time `json:"deletionDate"`
	KeyVersion     *struct {
		ID string `json:"id"`
	} `json:"keyVersion"`

	// Filled by the console from further calls.
	Rotation      string
	Registrations []registration
}

// StateName is Key Protect's name for the numeric state.
func (k key) StateName() string {
	switch k.State {
	case 0:
		return "Pre-active"
	case 1:
		return "Active"
	case 2:
		return "Suspended"
	case 3:
		return "Deactivated"
	case 5:
		return "Destroyed"
	}
	return "Unknown"
}

// TypeName is root or standard, and whether the material was imported.
func (k key) TypeName() string {
	t := "Root key"
	if k.Extractable {
		t = "Standard key"
	}
	if k.Imported {
		t += " (imported)"
	}
	return t
}

func (k key) Root() bool { return !k.Extractable }

type keyCollection struct {
	Resources []key `json:"resources"`
}

// registration ties a key to a resource that uses it.
type registration struct {
	KeyID              string `json:"keyId"`
	ResourceCRN        string `json:"resourceCrn"`
	PreventKeyDeletion bool   `json:"preventKeyDeletion"`
	KeyVersion         struct {
		ID string `json:"id"`
	} `json:"keyVersion"`
	// Name and Href of the instance, when the console can see it.
	Name, Href string
}

type registrationCollection struct {
	Resources []registration `json:"resources"`
}

type policyCollection struct {
	Resources []struct {
		Rotation *struct {
			Enabled       *bool `json:"enabled"`
			IntervalMonth *int  `json:"interval_month"`
		} `json:"rotation"`
	} `json:"resources"`
}

// kp calls Key Protect on one instance.
func kp(guid string) map[string]string { return map[string]string{"bluemix-instance": guid} }

const keyCollectionType = "application/vnd.ibm.kms.key+json"

// instanceNames maps instance CRNs to their console links, to name the
// resources registered on keys.
func instanceNames(ctx context.Context, api *caller) map[string]instance {
	all, _ := listInstances(ctx, api, nil)
	m := map[string]instance{}
	for _, i := range all {
		m[i.CRN] = i
	}
	return m
}

// loadKeys lists an instance's keys, deleted ones included (they can be
// restored), with each key's rotation policy and registrations.
func loadKeys(ctx context.Context, api *caller, guid string, names map[string]instance) ([]key, error) {
	var keys keyCollection
	if err := api.do(ctx, http.MethodGet, "/api/v2/keys?limit=5000&state=0,1,2,3,5", kp(guid), nil, &keys); err != nil {
		return nil, err
	}
	for i := range keys.Resources {
		k := &keys.Resources[i]
		var pol policyCollection
		if err := api.do(ctx, http.MethodGet, "/api/v2/keys/"+url.PathEscape(k.ID)+"/policies?policy=rotation", kp(guid), nil, &pol); err != nil {
			k.Rotation = "Unknown (" + apiError(err).Message + ")" // say so rather than guess "Manual"
			continue
		}
		k.Rotation = "Manual"
		for _, p := range pol.Resources {
			if p.Rotation != nil && p.Rotation.Enabled != nil && *p.Rotation.Enabled && p.Rotation.IntervalMonth != nil {
				k.Rotation = "Every " + plural(*p.Rotation.IntervalMonth, "month")
			}
		}
	}
	// One call for the registrations of every key of the instance.
	regs, err := listRegistrations(ctx, api, guid, "/api/v2/keys/registrations?limit=5000", names)
	if err != nil {
		return nil, err
	}
	for i := range keys.Resources {
		for _, reg := range regs {
			if reg.KeyID == keys.Resources[i].ID {
				keys.Resources[i].Registrations = append(keys.Resources[i].Registrations, reg)
			}
		}
	}
	return keys.Resources, nil
}

// loadRegistrations lists the resources registered on one key.
func loadRegistrations(ctx context.Context, api *caller, guid, keyID string, names map[string]instance) ([]registration, error) {
	return listRegistrations(ctx, api, guid, "/api/v2/keys/"+url.PathEscape(keyID)+"/registrations", names)
}

// listRegistrations reads a registration collection and names the
// instances it can.
func listRegistrations(ctx context.Context, api *caller, guid, path string, names map[string]instance) ([]registration, error) {
	var regs registrationCollection
	if err := api.do(ctx, http.MethodGet, path, kp(guid), nil, &regs); err != nil {
		return nil, err
	}
	for i := range regs.Resources {
		reg := &regs.Resources[i]
		if in, ok := names[instanceCRN(reg.ResourceCRN)]; ok {
			reg.Name, reg.Href = in.Name, in.Href()
		}
	}
	return regs.Resources, nil
}

// instanceCRN drops a CRN's resource type and resource (a backup volume's
// registration names its deployment this way).
func instanceCRN(s string) string {
	parts := strings.Split(s, ":")
	if len(parts) != 10 {
		return s
	}
	parts[8], parts[9] = "", ""
	return strings.Join(parts, ":")
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}

func (c *Console) keys(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	c.renderKeys(w, r, s, api, http.StatusOK, keyInput{}, nil)
}

// keyInput is the Add a key form, kept when the API refuses it.
type keyInput struct{ Name, Type, Description, Payload string }

// renderKeys shows an instance's keys; failed is a refused Add a key, shown
// above the page with the form as the user filled it in.
func (c *Console) renderKeys(w http.ResponseWriter, r *http.Request, s *session, api *caller, status int, form keyInput, failed error) {
	guid := r.PathValue("guid")
	ctx := r.Context()
	var inst instance
	if err := api.get(ctx, "/v2/resource_instances/"+url.PathEscape(guid), &inst); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	v := view{Title: inst.Name, Nav: "resources"}
	if failed != nil {
		v.Err = apiError(failed)
	}
	names := instanceNames(ctx, api)
	keys, err := loadKeys(ctx, api, guid, names)
	if err != nil && v.Err == nil {
		v.Err = apiError(err)
	}
	res := auth.Resource{ServiceName: "kms", ServiceInstance: guid, ResourceType: "key"}
	data := map[string]any{
		"Instance":  inst,
		"Form":      form,
		"Keys":      keys,
		"CanCreate": c.can(ctx, s, auth.KMSKeyCreate, res),
		"CanRotate": c.can(ctx, s, auth.KMSKeyRotate, res),
		"CanManage": c.can(ctx, s, auth.KMSKeyDelete, res),
	}
	// ?delete= and ?disable= open the confirmation of one listed key.
	for param, dialog := range map[string]string{"delete": "Delete", "disable": "Disable"} {
		if id := r.URL.Query().Get(param); id != "" {
			for _, k := range keys {
				if k.ID == id {
					data[dialog] = k
				}
			}
		}
	}
	v.Data = data
	c.render(w, r, s, status, "keys", v)
}

func (c *Console) keysURL(guid string) string { return "/console/kms/" + url.PathEscape(guid) }

// createKey creates a key, or imports one when key material is given.
func (c *Console) createKey(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	guid := r.PathValue("guid")
	f := r.PostForm
	form := keyInput{Name: strings.TrimSpace(f.Get("name")), Type: f.Get("key_type"),
		Description: strings.TrimSpace(f.Get("description")), Payload: strings.TrimSpace(f.Get("payload"))}
	res := map[string]any{"type": keyCollectionType, "name": form.Name, "extractable": form.Type == "standard"}
	if form.Description != "" {
		res["description"] = form.Description
	}
	if form.Payload != "" {
		res["payload"] = form.Payload
	}
	body := map[string]any{"metadata": map[string]any{"collectionType": keyCollectionType, "collectionTotal": 1}, "resources": []any{res}}
	var out keyCollection
	if err := api.do(r.Context(), http.MethodPost, "/api/v2/keys", kp(guid), body, &out); err != nil {
		// The refusal shows on the keys page, above the form as it was sent.
		c.renderKeys(w, r, s, api, apiError(err).Status, form, err)
		return
	}
	verb := "created"
	if res["payload"] != nil {
		verb = "imported"
	}
	c.redirect(w, r, s, c.keysURL(guid), "Key "+res["name"].(string)+" "+verb+".")
}

// keyActions are the lifecycle actions the key table offers, by path.
var keyActions = map[string]struct{ path, done string }{
	"rotate":  {"/actions/rotate", "rotated: deployments using it are re-encrypting with the new version"},
	"disable": {"/actions/disable", "disabled: deployments using it are locked until it is enabled"},
	"enable":  {"/actions/enable", "enabled"},
	"restore": {"/restore", "restored"},
}

func (c *Console) keyAction(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	guid, id := r.PathValue("guid"), r.PathValue("id")
	act, ok := keyActions[r.PathValue("action")]
	if !ok {
		c.renderError(w, r, s, http.StatusNotFound, "Unknown action", "Keys can be rotated, disabled, enabled, restored or deleted.")
		return
	}
	// Disabling a key locks every deployment registered on it: without the
	// dialog's confirmation, the console shows that dialog instead.
	if act.path == "/actions/disable" && r.PostForm.Get("confirm") == "" {
		regs, err := loadRegistrations(r.Context(), api, guid, id, nil)
		if err != nil {
			c.renderAPIError(w, r, s, err)
			return
		}
		if len(regs) > 0 {
			http.Redirect(w, r, c.keysURL(guid)+"?disable="+url.QueryEscape(id), http.StatusSeeOther)
			return
		}
	}
	var body any
	if act.path != "/restore" {
		body = map[string]any{}
	}
	// An imported key rotates to new material the user supplies.
	if p := strings.TrimSpace(r.PostForm.Get("payload")); p != "" && act.path == "/actions/rotate" {
		body = map[string]any{"payload": p}
	}
	if err := api.do(r.Context(), http.MethodPost, "/api/v2/keys/"+url.PathEscape(id)+act.path, kp(guid), body, nil); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, c.keysURL(guid), "Key "+act.done+".")
}

// deleteKey deletes a key; with force, even while resources use it
// (cryptoshredding). The dialog that posts here listed those resources.
func (c *Console) deleteKey(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	guid, id := r.PathValue("guid"), r.PathValue("id")
	path := "/api/v2/keys/" + url.PathEscape(id)
	if r.PostForm.Get("force") != "" {
		path += "?force=true"
	}
	if err := api.do(r.Context(), http.MethodDelete, path, map[string]string{"Prefer": "return=minimal", "bluemix-instance": guid}, nil, nil); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, c.keysURL(guid), "Key deleted. It can be restored for 30 days.")
}
