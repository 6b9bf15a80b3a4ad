package console

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/crn"
)

// task is a Cloud Databases style task: a long operation on a deployment.
type task struct {
	ID              string     `json:"id"`
	ResourceType    string     `json:"resource_type"`
	Description     string     `json:"description"`
	Status          string     `json:"status"`
	ProgressPercent int        `json:"progress_percent"`
	CreatedAt       *time.Time `json:"created_at"`
	UpdatedAt       *time.Time `json:"updated_at"`
	Reason          string     `json:"reason"`
}

// Done says whether the task has stopped changing.
func (t task) Done() bool {
	return t.Status == "completed" || t.Status == "failed" || t.Status == "expired"
}

// backup is a deployment backup in the Cloud Databases v5 shape.
type backup struct {
	ID           string     `json:"id"`   // the backup's CRN
	Type         string     `json:"type"` // scheduled, on_demand
	Status       string     `json:"status"`
	IsRestorable bool       `json:"is_restorable"`
	CreatedAt    *time.Time `json:"created_at"`
	SizeBytes    int64      `json:"size_bytes"`
	KeyCRN       string     `json:"encryption_key_crn"`
	Reason       string     `json:"reason"`
}

// Retention is the topic's retention for people ("7 days", "forever").
func (t topic) Retention() string {
	switch {
	case t.RetentionMs < 0:
		return "Forever"
	case t.RetentionMs == 0:
		return "—"
	case t.RetentionMs%(24*3600_000) == 0:
		return plural(int(t.RetentionMs/(24*3600_000)), "day")
	case t.RetentionMs%3600_000 == 0:
		return plural(int(t.RetentionMs/3600_000), "hour")
	}
	return (time.Duration(t.RetentionMs) * time.Millisecond).String()
}

// Size is the backup's size for people ("1.5 KiB").
func (b backup) Size() string { return humanize.IBytes(uint64(max(b.SizeBytes, 0))) }

type topic struct {
	Name              string `json:"name"`
	Partitions        int    `json:"partitions"`
	ReplicationFactor int    `json:"replicationFactor"`
	RetentionMs       int64  `json:"retentionMs"`
	CleanupPolicy     string `json:"cleanupPolicy"`
}

// encryptionKey is one of the deployment's keys and the version it uses.
type encryptionKey struct {
	Purpose, CRN, Version, Name, State, Href string
}

func deploymentPath(inst instance) string {
	return "/v5/ibm/deployments/" + url.PathEscape(inst.CRN)
}

func (c *Console) loadDeployment(ctx context.Context, api *caller, guid string) (instance, error) {
	var inst instance
	err := api.get(ctx, "/v2/resource_instances/"+url.PathEscape(guid), &inst)
	return inst, err
}

func (c *Console) loadTasks(ctx context.Context, api *caller, inst instance) ([]task, error) {
	var out struct {
		Tasks []task `json:"tasks"`
	}
	if err := api.get(ctx, deploymentPath(inst)+"/tasks", &out); err != nil {
		return nil, err
	}
	if t, ok := provisioningTask(inst); ok {
		out.Tasks = append(out.Tasks, t)
	}
	slices.SortStableFunc(out.Tasks, func(a, b task) int {
		if a.CreatedAt == nil || b.CreatedAt == nil {
			return 0
		}
		return b.CreatedAt.Compare(*a.CreatedAt)
	})
	return out.Tasks, nil
}

// provisioningTask is the deployment's creation as a task, from the
// Resource Controller's last operation, so the Tasks panel says what state
// provisioning is really in (and any warnings it gave) until another
// operation follows.
func provisioningTask(inst instance) (task, bool) {
	op := inst.LastOperation
	if op.Type != "create" {
		return task{}, false
	}
	t := task{ID: "provisioning", ResourceType: "instance", Description: "Provisioning deployment",
		CreatedAt: inst.CreatedAt, UpdatedAt: inst.UpdatedAt, Status: "running"}
	switch op.State {
	case "succeeded":
		t.Status, t.ProgressPercent = "completed", 100
		t.Reason = strings.Join(op.Warnings, "; ")
	case "failed":
		t.Status, t.ProgressPercent, t.Reason = "failed", 100, sentence(op.Description)
	}
	return t, true
}

// keyDetails reads a key's name, state and the version the deployment is
// registered with, from the key's own Key Protect instance.
func keyDetails(ctx context.Context, api *caller, purpose, keyCRN, resourceCRN string) encryptionKey {
	ek := encryptionKey{Purpose: purpose, CRN: keyCRN}
	k, err := crn.Parse(keyCRN)
	if err != nil || k.Resource == "" {
		return ek
	}
	ek.Href = "/console/kms/" + url.PathEscape(k.ServiceInstance)
	var keys keyCollection
	if api.do(ctx, http.MethodGet, "/api/v2/keys/"+url.PathEscape(k.Resource)+"/metadata", kp(k.ServiceInstance), nil, &keys) == nil && len(keys.Resources) > 0 {
		ek.Name, ek.State = keys.Resources[0].Name, keys.Resources[0].StateName()
	}
	regs, err := loadRegistrations(ctx, api, k.ServiceInstance, k.Resource, nil)
	if err == nil {
		for _, reg := range regs {
			if instanceCRN(reg.ResourceCRN) == resourceCRN {
				ek.Version = reg.KeyVersion.ID
			}
		}
	}
	return ek
}

func (c *Console) deployment(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	ctx := r.Context()
	inst, err := c.loadDeployment(ctx, api, r.PathValue("guid"))
	if err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.renderDeployment(w, r, s, api, inst, nil)
}

// newCredentials are service credentials just created, shown this once.
type newCredentials struct {
	Name        string
	Credentials map[string]any
}

// credential is a resource key (service credentials) as the Resource
// Controller lists it, without its secret part.
type credential struct {
	Name      string     `json:"name"`
	GUID      string     `json:"guid"`
	SourceCRN string     `json:"source_crn"` // the instance the key belongs to
	Role      string     `json:"role"`
	State     string     `json:"state"`
	CreatedAt *time.Time `json:"created_at"`
}

// renderDeployment shows the overview; credentials are shown only in the
// response that created them.

func (c *Console) renderDeployment(w http.ResponseWriter, r *http.Request, s *session, api *caller, inst instance, created *newCredentials) {
	ctx := r.Context()
	v := view{Title: inst.Name, Nav: "resources"}
	data := map[string]any{"Instance": inst, "NewCredentials": created}
	var problems []string
	note := func(what string, err error) {
		if err != nil {
			problems = append(problems, what+": "+sentence(apiError(err).Message))
		}
	}
	tasks, err := c.loadTasks(ctx, api, inst)
	note("Tasks", err)
	data["Tasks"] = tasks
	data["Polling"] = slices.ContainsFunc(tasks, func(t task) bool { return !t.Done() })

	// The data plane's own view: endpoints and the key version in use.
	var plane struct {
		KeyVersion    string   `json:"key_version"`
		KafkaBrokers  []string `json:"kafka_brokers_sasl"`
		KafkaAdminURL string   `json:"kafka_admin_url"`
		Reencrypting  bool     `json:"reencrypting"`
	}
	// Best effort: a deployment waiting for reclamation has no data plane,
	// and the state card already says why.
	_ = api.get(ctx, "/messagehub/"+url.PathEscape(inst.GUID), &plane)
	data["Plane"] = plane

	var keys []encryptionKey
	if k := inst.DiskKey(); k != "" {
		ek := keyDetails(ctx, api, "Disk", k, inst.CRN)
		if ek.Version == "" {
			ek.Version = plane.KeyVersion
		}
		keys = append(keys, ek)
	}
	if k := inst.BackupKey(); k != "" {
		keys = append(keys, keyDetails(ctx, api, "Backups", k, inst.CRN))
	}
	data["Keys"] = keys

	var backups struct {
		Backups []backup `json:"backups"`
	}
	if err := api.get(ctx, deploymentPath(inst)+"/backups", &backups); err != nil {
		data["BackupsError"] = apiError(err).Message
		if apiError(err).Status == http.StatusNotFound {
			data["BackupsError"] = "this server does not offer backups"
		}
	}
	data["Backups"] = backups.Backups

	var creds struct {
		Resources []credential `json:"resources"`
	}
	note("Service credentials", api.get(ctx, "/v2/resource_instances/"+url.PathEscape(inst.GUID)+"/resource_keys", &creds))
	data["Credentials"] = creds.Resources
	// ?delete_credentials= opens the confirmation for one of the listed
	// credentials; anything else opens nothing.
	if id := r.URL.Query().Get("delete_credentials"); id != "" {
		for _, cr := range creds.Resources {
			if cr.GUID == id {
				data["DeleteCredentials"] = cr
			}
		}
	}
	// ?view_credentials= shows one listed credential's secrets again, when
	// the Resource Controller gives them to this user (it audits the reading).
	if id := r.URL.Query().Get("view_credentials"); id != "" && created == nil {
		for _, cr := range creds.Resources {
			if cr.GUID == id {
				data["ViewedCredentials"] = c.viewCredentials(ctx, api, cr)
			}
		}
	}

	// Topics live in the data plane: readable only while the deployment can
	// unwrap its key. When it cannot, the page says so instead of failing.
	var topics []topic
	if err := api.get(ctx, "/messagehub/"+url.PathEscape(inst.GUID)+"/admin/topics", &topics); err != nil {
		data["TopicsError"] = apiError(err).Message
	}
	data["Topics"] = topics
	var groups []client.GroupSummary
	if err := api.get(ctx, adminURL(inst.GUID, "consumergroups"), &groups); err != nil {
		data["GroupsError"] = apiError(err).Message
	}
	data["Groups"] = groups
	data["Problems"] = problems
	// ?delete_topic= opens the confirmation for one of the listed topics.
	if name := r.URL.Query().Get("delete_topic"); name != "" {
		for _, t := range topics {
			if t.Name == name {
				data["DeleteTopic"] = t
			}
		}
	}

	if inst.State == "pending_reclamation" {
		rec, err := reclamationOf(ctx, api, inst.GUID)
		note("Reclamation", err)
		data["Reclamation"] = rec
	}
	data["ConfirmDelete"] = r.URL.Query().Get("delete") != "" && inst.State != "pending_reclamation"

	res := auth.Resource{ServiceName: "messagehub", ServiceInstance: inst.GUID}
	data["CanDelete"] = c.can(ctx, s, auth.InstanceDelete, res)
	data["CanBackup"] = c.can(ctx, s, auth.BackupCreate, res)
	data["CanCredentials"] = c.can(ctx, s, auth.KeyCreate, res)
	data["CanDeleteCredentials"] = c.can(ctx, s, auth.KeyDelete, res)
	// The admin API lets Managers of the deployment manage its topics.
	data["CanTopics"] = c.can(ctx, s, auth.TopicManage, res)
	data["Active"] = inst.State == "active"
	v.Data = data
	c.render(w, r, s, http.StatusOK, "deployment", v)
}

// deploymentTasks is the Tasks panel alone, polled by the page's script.
func (c *Console) deploymentTasks(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	ctx := r.Context()
	inst, err := c.loadDeployment(ctx, api, r.PathValue("guid"))
	if err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	tasks, err := c.loadTasks(ctx, api, inst)
	data := map[string]any{"Instance": inst, "Tasks": tasks, "Polling": slices.ContainsFunc(tasks, func(t task) bool { return !t.Done() })}
	if err != nil {
		data["TasksError"] = apiError(err).Message
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := c.pages["deployment"].t.ExecuteTemplate(w, "tasks", data); err != nil {
		c.cfg.Logger.Error("console: rendering tasks failed", "err", err)
	}
}

func (c *Console) deploymentURL(guid string) string {
	return "/console/deployments/" + url.PathEscape(guid)
}

func (c *Console) createBackup(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	inst, err := c.loadDeployment(r.Context(), api, r.PathValue("guid"))
	if err == nil {
		err = api.do(r.Context(), http.MethodPost, deploymentPath(inst)+"/backups", nil, map[string]any{}, nil)
	}
	if err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, c.deploymentURL(inst.GUID), "Backup started: follow it in the Tasks panel.")
}

// restoreBackup restores a backup into a new deployment, as IBM Cloud does:
// a create request with the backup's id, on the same plan, region and keys.
func (c *Console) restoreBackup(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	inst, err := c.loadDeployment(r.Context(), api, r.PathValue("guid"))
	if err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("name"))
	if name == "" {
		name = inst.Name + "-restored"
	}
	params := map[string]any{"backup_id": r.PostForm.Get("backup_id")}
	if k := inst.DiskKey(); k != "" {
		params["disk_encryption_key_crn"] = k
	}
	if k := inst.BackupKey(); k != "" {
		params["backup_encryption_key_crn"] = k
	}
	body := map[string]any{"name": name, "target": inst.RegionID, "resource_plan_id": inst.ResourcePlanID, "parameters": params}
	var created instance
	if err := api.do(r.Context(), http.MethodPost, "/v2/resource_instances", nil, body, &created); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, created.Href(), "Restoring into the new deployment "+created.Name+".")
}

// createCredentials creates service credentials and shows them once.
func (c *Console) createCredentials(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	inst, err := c.loadDeployment(r.Context(), api, r.PathValue("guid"))
	if err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	name := strings.TrimSpace(r.PostForm.Get("name"))
	role := r.PostForm.Get("role")
	if role == "" {
		role = "Writer"
	}
	var created struct {
		Name        string         `json:"name"`
		Credentials map[string]any `json:"credentials"`
	}
	body := map[string]any{"name": name, "source": inst.GUID, "role": role}
	if err := api.do(r.Context(), http.MethodPost, "/v2/resource_keys", nil, body, &created); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.renderDeployment(w, r, s, api, inst, &newCredentials{Name: created.Name, Credentials: created.Credentials})
}

// deleteCredentials deletes one of the deployment's service credentials. The
// API revokes their API key and closes the Kafka connections it opened; the
// console first checks that the key is this deployment's, so a form posted
// to one deployment never deletes another's credentials.
func (c *Console) deleteCredentials(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	ctx := r.Context()
	inst, err := c.loadDeployment(ctx, api, r.PathValue("guid"))
	if err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	// Found in the deployment's own list (a GET of the key would also read,
	// and audit reading, its credentials).
	var creds struct {
		Resources []credential `json:"resources"`
	}
	if err := api.get(ctx, "/v2/resource_instances/"+url.PathEscape(inst.GUID)+"/resource_keys", &creds); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	var key credential
	for _, cr := range creds.Resources {
		if cr.GUID == r.PathValue("key") {
			key = cr
		}
	}
	if key.SourceCRN != inst.CRN || key.GUID == "" {
		c.renderError(w, r, s, http.StatusNotFound, "Not found",
			"These service credentials do not belong to the deployment "+inst.Name+", so nothing was deleted.")
		return
	}
	if err := api.do(ctx, http.MethodDelete, "/v2/resource_keys/"+url.PathEscape(key.GUID), nil, nil, nil); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, c.deploymentURL(inst.GUID), "Service credentials "+key.Name+
		" deleted: their API key no longer works, and Kafka connections opened with it are closed.")
}

// viewedCredentials are existing credentials shown again, or why not.
type viewedCredentials struct {
	Name        string
	Credentials map[string]any
	Unavailable string
}

func (c *Console) viewCredentials(ctx context.Context, api *caller, cr credential) viewedCredentials {
	var key struct {
		Credentials map[string]any `json:"credentials"`
	}
	v := viewedCredentials{Name: cr.Name}
	if err := api.get(ctx, "/v2/resource_keys/"+url.PathEscape(cr.GUID), &key); err != nil {
		v.Unavailable = sentence(apiError(err).Message)
		return v
	}
	if _, redacted := key.Credentials["REDACTED"]; redacted || len(key.Credentials) == 0 {
		v.Unavailable = "The Resource Controller does not show these credentials to you: they were shown once when created, or viewing them needs the role that can create credentials."
		return v
	}
	v.Credentials = key.Credentials
	return v
}

// reclamation is a deleted instance waiting out its soft-deletion period.
type reclamation struct {
	ID         string     `json:"id"`
	State      string     `json:"state"`
	TargetTime *time.Time `json:"target_time"`
}

// reclamationOf finds the instance's pending reclamation, if any.
func reclamationOf(ctx context.Context, api *caller, guid string) (*reclamation, error) {
	var out struct {
		Resources []reclamation `json:"resources"`
	}
	if err := api.get(ctx, "/v1/reclamations?"+url.Values{"resource_instance_id": {guid}}.Encode(), &out); err != nil {
		return nil, err
	}
	for i := range out.Resources {
		if out.Resources[i].State == "SCHEDULED" {
			return &out.Resources[i], nil
		}
	}
	return nil, nil
}

// deleteDeployment deletes a deployment; the Resource Controller keeps it
// for its reclamation period, registered on its keys.
func (c *Console) deleteDeployment(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	guid := r.PathValue("guid")
	if err := api.do(r.Context(), http.MethodDelete, "/v2/resource_instances/"+url.PathEscape(guid), nil, nil, nil); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, c.deploymentURL(guid), "Deployment deleted. It can be restored until its reclamation period ends.")
}

// restoreDeployment restores a deleted deployment from its reclamation.
func (c *Console) restoreDeployment(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	guid := r.PathValue("guid")
	rec, err := reclamationOf(r.Context(), api, guid)
	if err == nil && rec == nil {
		c.renderError(w, r, s, http.StatusConflict, "Nothing to restore", "This deployment is not waiting for reclamation.")
		return
	}
	if err == nil {
		err = api.do(r.Context(), http.MethodPost, "/v1/reclamations/"+url.PathEscape(rec.ID)+"/actions/restore", nil, map[string]any{}, nil)
	}
	if err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, c.deploymentURL(guid), "Deployment restored.")
}
