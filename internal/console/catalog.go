package console

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/controller"
)

// Regions the catalog offers Event Streams in. Backup keys come from
// controller.BackupKeyRegions (the seed's "select regions"), whose advice
// the CLI gives too. The dropdowns only narrow the choice; the Resource
// Controller refuses anything else itself.
var (
	streamsRegions = []string{"us-south", "us-east", "eu-de", "eu-gb", "jp-tok", "au-syd", "ca-tor"}
	streamsPlans   = []struct{ ID, Name string }{{"eventstreams-gen2-standard", "Standard"}, {"eventstreams-gen2-enterprise", "Enterprise"}}
	kmsPlans       = []struct{ ID, Name string }{{"tiered-pricing", "Tiered pricing"}}
)

// kmsForm is the catalog's Key Protect form.
func (c *Console) kmsForm(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	c.renderKMSForm(w, r, s, http.StatusOK, map[string]string{"Region": "us-south"}, nil)
}

func (c *Console) renderKMSForm(w http.ResponseWriter, r *http.Request, s *session, status int, form map[string]string, failed error) {
	v := view{Title: "Create Key Protect", Nav: "catalog", Data: map[string]any{"Form": form, "Regions": streamsRegions, "Plans": kmsPlans,
		"BackupRegionAdvice": controller.BackupRegionAdvice}}
	if failed != nil {
		v.Err = apiError(failed)
	}
	c.render(w, r, s, status, "catalog_kms", v)
}

func (c *Console) provisionKMS(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	f := r.PostForm
	form := map[string]string{"Name": strings.TrimSpace(f.Get("name")), "Region": f.Get("region"), "Plan": f.Get("plan")}
	body := map[string]any{"name": form["Name"], "target": form["Region"], "resource_plan_id": form["Plan"]}
	var created instance
	if err := api.do(r.Context(), http.MethodPost, "/v2/resource_instances", nil, body, &created); err != nil {
		c.renderKMSForm(w, r, s, apiError(err).Status, form, err)
		return
	}
	c.redirect(w, r, s, created.Href(), "Key Protect instance "+created.Name+" created. Add a root key to bring your own key.")
}

// kmsKeyChoice is one root key a deployment can be encrypted with.
type kmsKeyChoice struct {
	Instance instance
	Keys     []key
}

// provisionInput is the catalog form.
type provisionInput struct {
	Name, Region, Plan, KMSInstance, DiskKey, BackupKey string
}

// provisionForm is the catalog's Event Streams form. Its query parameters,
// named as the form's fields, fill it in again, e.g. on the way back from
// creating the authorization a failed provisioning asked for.
func (c *Console) provisionForm(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	in := provisionInputOf(r.URL.Query())
	if in.Region == "" {
		in.Region = "us-south"
	}
	if in.Plan == "" {
		in.Plan = streamsPlans[0].ID
	}
	c.renderProvisionForm(w, r, s, api, http.StatusOK, in, nil)
}

func provisionInputOf(f url.Values) provisionInput {
	return provisionInput{Name: strings.TrimSpace(f.Get("name")), Region: f.Get("region"), Plan: f.Get("plan"),
		KMSInstance: f.Get("kms_instance"), DiskKey: f.Get("disk_key"), BackupKey: f.Get("backup_key")}
}

// query is the form as query parameters of the form's page.
func (in provisionInput) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"name": in.Name, "region": in.Region, "plan": in.Plan,
		"kms_instance": in.KMSInstance, "disk_key": in.DiskKey, "backup_key": in.BackupKey} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return q
}

// rootKeys lists the active root keys of every KMS instance the user can see.
func rootKeys(ctx context.Context, api *caller) ([]kmsKeyChoice, error) {
	all, err := listInstances(ctx, api, url.Values{"sub_type": {"kms"}})
	if err != nil {
		return nil, err
	}
	var out []kmsKeyChoice
	for _, in := range all {
		if !in.KMS() || in.State != "active" {
			continue
		}
		var keys keyCollection
		if err := api.do(ctx, http.MethodGet, "/api/v2/keys?limit=5000&state=1", kp(in.GUID), nil, &keys); err != nil {
			continue // an instance the user may list but not read: offer its keys to nobody
		}
		choice := kmsKeyChoice{Instance: in}
		for _, k := range keys.Resources {
			if k.Root() && k.State == 1 {
				choice.Keys = append(choice.Keys, k)
			}
		}
		out = append(out, choice)
	}
	return out, nil
}

func (c *Console) renderProvisionForm(w http.ResponseWriter, r *http.Request, s *session, api *caller, status int, in provisionInput, failed error) {
	v := view{Title: "Create Event Streams", Nav: "catalog"}
	if failed != nil {
		v.Err = apiError(failed)
		if authorizationMissing(v.Err.Code, v.Err.Message) {
			v.ErrHelpText = "Create the authorization"
			q := url.Values{"source": {"messagehub"}, "target": {"kms"}}
			if in.KMSInstance != "" {
				q.Set("target_instance", in.KMSInstance)
			}
			// Once the authorization exists, back to this form as it was.
			q.Set("return", "/console/catalog/event-streams?"+in.query().Encode())
			v.ErrHelpURL = "/console/iam/authorizations/create?" + q.Encode()
		}
	}
	choices, err := rootKeys(r.Context(), api)
	if err != nil && v.Err == nil {
		v.Err = apiError(err)
	}
	var backup []kmsKeyChoice
	for _, ch := range choices {
		if slices.Contains(controller.BackupKeyRegions, ch.Instance.RegionID) {
			backup = append(backup, ch)
		}
	}
	v.Data = map[string]any{"Form": in, "Regions": streamsRegions, "Plans": streamsPlans, "KMS": choices,
		"BackupKMS": backup, "BackupRegions": strings.Join(controller.BackupKeyRegions, ", "), "BackupRegionAdvice": controller.BackupRegionAdvice}
	c.render(w, r, s, status, "provision", v)
}

// authorizationMissing recognises the API's "no service authorization" error.
func authorizationMissing(code, msg string) bool {
	m := strings.ToLower(code + " " + msg)
	return strings.Contains(m, "authorization") || strings.Contains(m, "s2s")
}

func (c *Console) provision(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	in := provisionInputOf(r.PostForm)
	// A KMS instance chosen without one of its keys is an unfinished form:
	// provisioning would silently fall back to a generated key.
	if in.KMSInstance != "" && in.DiskKey == "" {
		c.renderProvisionForm(w, r, s, api, http.StatusBadRequest, in, &client.Error{Status: http.StatusBadRequest,
			Message: "Choose the disk encryption key from the Key Protect instance you selected, or choose a randomly generated key."})
		return
	}
	params := map[string]any{}
	if in.DiskKey != "" {
		params["disk_encryption_key_crn"] = in.DiskKey
	}
	if in.BackupKey != "" {
		params["backup_encryption_key_crn"] = in.BackupKey
	}
	body := map[string]any{"name": in.Name, "target": in.Region, "resource_plan_id": in.Plan, "parameters": params}
	var created instance
	if err := api.do(r.Context(), http.MethodPost, "/v2/resource_instances", nil, body, &created); err != nil {
		c.renderProvisionForm(w, r, s, api, apiError(err).Status, in, err)
		return
	}
	msg := "Deployment " + created.Name + " created."
	if created.State != "active" {
		msg = "Deployment " + created.Name + " is being created: follow it in the Tasks panel."
	}
	c.redirect(w, r, s, created.Href(), msg)
}

// catalog lists what can be created.
func (c *Console) catalog(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	ctx := r.Context()
	c.render(w, r, s, http.StatusOK, "catalog", view{Title: "Catalog", Nav: "catalog", Data: map[string]any{
		"CanKMS":     c.can(ctx, s, auth.InstanceCreate, auth.Resource{ServiceName: "kms"}),
		"CanStreams": c.can(ctx, s, auth.InstanceCreate, auth.Resource{ServiceName: "messagehub"}),
	}})
}
