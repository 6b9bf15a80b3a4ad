// Package rcapi serves the resource controller over HTTP in IBM's shapes:
// Resource Controller v2 (/v2/resource_instances, /v2/resource_keys,
// /v1/reclamations) and the Cloud Databases v5 tasks API (/v5/ibm/...).
package rcapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
)

// API is the HTTP edge of the controller.
type API struct {
	ctl    *controller.Controller
	authn  auth.Authenticator
	logger *slog.Logger
}

// New returns the API of ctl; callers authenticate with IAM bearer tokens.
func New(ctl *controller.Controller, authn auth.Authenticator, logger *slog.Logger) *API {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{ctl: ctl, authn: authn, logger: logger}
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.Handle("POST /v2/resource_instances", a.handle(a.createInstance))
	mux.Handle("GET /v2/resource_instances", a.handle(a.listInstances))
	mux.Handle("GET /v2/resource_instances/{id}", a.handle(a.getInstance))
	mux.Handle("PATCH /v2/resource_instances/{id}", a.handle(a.updateInstance))
	mux.Handle("DELETE /v2/resource_instances/{id}", a.handle(a.deleteInstance))
	mux.Handle("GET /v2/resource_instances/{id}/resource_keys", a.handle(a.listInstanceKeys))
	mux.Handle("POST /v2/resource_keys", a.handle(a.createKey))
	mux.Handle("GET /v2/resource_keys", a.handle(a.listKeys))
	mux.Handle("GET /v2/resource_keys/{id}", a.handle(a.getKey))
	mux.Handle("DELETE /v2/resource_keys/{id}", a.handle(a.deleteKey))
	mux.Handle("GET /v1/reclamations", a.handle(a.listReclamations))
	mux.Handle("GET /v1/reclamations/{id}", a.handle(a.getReclamation))
	mux.Handle("POST /v1/reclamations/{id}/actions/{action}", a.handle(a.reclamationAction))
	mux.Handle("GET /v5/ibm/deployments/{id}/tasks", a.handle(a.listTasks))
	mux.Handle("GET /v5/ibm/tasks/{id}", a.handle(a.getTask))
}

func (a *API) createInstance(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	const op = "rcapi.createInstance"
	var body createInstanceBody
	if err := httpapi.DecodeJSON(r, &body, httpapi.MaxBody, true); err != nil {
		return err
	}
	params := body.Parameters
	if params == nil {
		params = map[string]any{}
	}
	for name, v := range map[string]*string{"disk_encryption_key_crn": body.DiskEncryptionKeyCRN, "backup_encryption_key_crn": body.BackupEncryptionKeyCRN,
		"disk_encryption_key": body.DiskEncryptionKey} {
		if v == nil {
			continue
		}
		if old, ok := params[name]; ok && old != *v {
			return errs.Ef(op, errs.Invalid, "CONFLICTING_PARAMETER", "%s is given twice with different values, at the top level and in parameters", name).On("field", name)
		}
		params[name] = *v
	}
	inst, err := a.ctl.CreateInstance(ctx, controller.CreateInstanceRequest{Name: body.Name, Service: body.ResourceID, Target: body.Target,
		ResourceGroup: body.ResourceGroup, PlanID: body.ResourcePlanID, Tags: body.Tags, AllowCleanup: body.AllowCleanup, Parameters: params})
	if err != nil {
		return err
	}
	for _, warning := range inst.LastOperation.Warnings {
		w.Header().Add("Warning", "299 - "+strconv.Quote(warning))
	}
	w.Header().Set("Location", instanceURL(inst.GUID))
	httpapi.WriteJSON(w, http.StatusCreated, toInstance(inst))
	return nil
}

func (a *API) getInstance(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	inst, err := a.ctl.GetInstance(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, toInstance(inst))
	return nil
}

func (a *API) listInstances(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	const op = "rcapi.listInstances"
	q := r.URL.Query()
	f := controller.InstanceFilter{GUID: q.Get("guid"), Name: q.Get("name"), ResourceGroupID: q.Get("resource_group_id"),
		ResourceID: q.Get("resource_id"), ResourcePlanID: q.Get("resource_plan_id"), Type: q.Get("type"), SubType: q.Get("sub_type"),
		Start: q.Get("start")}
	var err error
	if f.Limit, err = intParam(op, q.Get("limit"), "limit"); err != nil {
		return err
	}
	if s := q.Get("state"); s != "" {
		f.States = strings.Split(s, ",")
	}
	if f.UpdatedFrom, err = timeParam(op, q.Get("updated_from"), "updated_from"); err != nil {
		return err
	}
	if f.UpdatedTo, err = timeParam(op, q.Get("updated_to"), "updated_to"); err != nil {
		return err
	}
	page, err := a.ctl.ListInstances(ctx, f)
	if err != nil {
		return err
	}
	out := listJSON[instanceJSON]{RowsCount: len(page.Instances), NextURL: nextURL(r.URL, page.NextStart), Resources: []instanceJSON{}}
	for i := range page.Instances {
		out.Resources = append(out.Resources, toInstance(&page.Instances[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func intParam(op, s, name string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, errs.Ef(op, errs.Invalid, "INVALID_QUERY_PARAM", "The %s query parameter must be a positive integer", name).On("query_param", name)
	}
	return n, nil
}

func timeParam(op, s, name string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errs.Ef(op, errs.Invalid, "INVALID_QUERY_PARAM", "The %s query parameter must be an RFC 3339 time such as 2026-01-02T15:04:05Z", name).On("query_param", name)
	}
	return t, nil
}

func (a *API) updateInstance(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	var body updateInstanceBody
	if err := httpapi.DecodeJSON(r, &body, httpapi.MaxBody, true); err != nil {
		return err
	}
	inst, err := a.ctl.UpdateInstance(ctx, r.PathValue("id"), controller.UpdateInstanceRequest{Name: body.Name,
		Parameters: body.Parameters, PlanID: body.ResourcePlanID, AllowCleanup: body.AllowCleanup})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, toInstance(inst))
	return nil
}

func (a *API) deleteInstance(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	const op = "rcapi.deleteInstance"
	recursive := false
	if s := r.URL.Query().Get("recursive"); s != "" {
		var err error
		if recursive, err = strconv.ParseBool(s); err != nil {
			return errs.E(op, errs.Invalid, "INVALID_QUERY_PARAM", "The recursive query parameter must be true or false").On("query_param", "recursive")
		}
	}
	inst, err := a.ctl.DeleteInstance(ctx, r.PathValue("id"), recursive)
	if err != nil {
		return err
	}
	if inst.State == controller.StatePendingReclamation {
		w.WriteHeader(http.StatusAccepted) // reclamation continues after the response
		return nil
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) createKey(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	var body createKeyBody
	if err := httpapi.DecodeJSON(r, &body, httpapi.MaxBody, true); err != nil {
		return err
	}
	key, err := a.ctl.CreateResourceKey(ctx, controller.CreateKeyRequest{Name: body.Name, Source: body.Source, Role: body.Role})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusCreated, toKey(key))
	return nil
}

// getKey answers a key with its credentials to users who may create
// credentials for its instance, as IBM's Resource Controller does, and
// redacted to the others.
func (a *API) getKey(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	key, err := a.ctl.GetResourceKey(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	if a.ctl.CredentialsViewable() {
		withCreds, err := a.ctl.ResourceKeyCredentials(ctx, key.GUID)
		switch {
		case err == nil:
			key = withCreds
		case !errs.Is(errs.Permission, err) && !errs.Is(errs.NotExist, err):
			return err
		}
	}
	out := toKey(key)
	out.OnetimeCredentials = !a.ctl.CredentialsViewable()
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) listKeys(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	return a.writeKeys(ctx, w, r, controller.KeyFilter{GUID: q.Get("guid"), Name: q.Get("name"), InstanceID: q.Get("source")})
}

func (a *API) listInstanceKeys(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	inst, err := a.ctl.GetInstance(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	return a.writeKeys(ctx, w, r, controller.KeyFilter{InstanceID: inst.GUID})
}

func (a *API) writeKeys(ctx context.Context, w http.ResponseWriter, r *http.Request, f controller.KeyFilter) error {
	q := r.URL.Query()
	var err error
	if f.Limit, err = intParam("rcapi.listKeys", q.Get("limit"), "limit"); err != nil {
		return err
	}
	f.Start = q.Get("start")
	page, err := a.ctl.ListResourceKeys(ctx, f)
	if err != nil {
		return err
	}
	out := listJSON[keyJSON]{RowsCount: len(page.Keys), NextURL: nextURL(r.URL, page.NextStart), Resources: []keyJSON{}}
	for i := range page.Keys {
		out.Resources = append(out.Resources, toKey(&page.Keys[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) deleteKey(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := a.ctl.DeleteResourceKey(ctx, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) listReclamations(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	recs, err := a.ctl.ListReclamations(ctx, controller.ReclamationFilter{AccountID: q.Get("account_id"),
		InstanceID: q.Get("resource_instance_id"), ResourceGroupID: q.Get("resource_group_id")})
	if err != nil {
		return err
	}
	out := struct {
		Resources []reclamationJSON `json:"resources"`
	}{Resources: []reclamationJSON{}}
	for i := range recs {
		out.Resources = append(out.Resources, toReclamation(&recs[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) getReclamation(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	rec, err := a.ctl.GetReclamation(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, toReclamation(rec))
	return nil
}

func (a *API) reclamationAction(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	const op = "rcapi.reclamationAction"
	var body reclamationActionBody
	if err := httpapi.DecodeJSON(r, &body, 64<<10, false); err != nil {
		return err
	}
	var rec *controller.Reclamation
	var err error
	switch action := r.PathValue("action"); action {
	case "restore":
		rec, err = a.ctl.RestoreReclamation(ctx, r.PathValue("id"))
	case "reclaim":
		rec, err = a.ctl.ReclaimReclamation(ctx, r.PathValue("id"))
	default:
		return errs.E(op, errs.NotExist, "INVALID_ACTION", fmt.Sprintf("The reclamation action %q does not exist; use restore or reclaim", action))
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, toReclamation(rec))
	return nil
}

func (a *API) listTasks(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	tasks, err := a.ctl.ListTasks(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	out := struct {
		Tasks []taskJSON `json:"tasks"`
	}{Tasks: []taskJSON{}}
	for i := range tasks {
		out.Tasks = append(out.Tasks, toTask(&tasks[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) getTask(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	task, err := a.ctl.GetTask(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, TaskBody(task))
	return nil
}

// TaskBody is the Cloud Databases body of one task, {"task":{...}}: what
// GET /v5/ibm/tasks/{id} returns and what mutating deployment calls (a
// backup) return with 202 Accepted.
func TaskBody(task *controller.Task) any {
	return struct {
		Task taskJSON `json:"task"`
	}{toTask(task)}
}

// handle authenticates the caller, runs h, and writes its error in the
// platform error format.
func (a *API) handle(h httpapi.Handler) http.Handler {
	return httpapi.Platform(a.authn, a.logger, "resource controller", h)
}
