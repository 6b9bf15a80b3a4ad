package rcapi

import (
	"net/url"
	"time"

	"github.com/keyline/keyline/internal/controller"
)

// The Resource Controller v2 and Cloud Databases v5 representations.

type instanceJSON struct {
	ID                 string                  `json:"id"`
	GUID               string                  `json:"guid"`
	URL                string                  `json:"url"`
	CRN                string                  `json:"crn"`
	Name               string                  `json:"name"`
	RegionID           string                  `json:"region_id"`
	AccountID          string                  `json:"account_id"`
	ResourceGroupID    string                  `json:"resource_group_id"`
	ResourceGroupCRN   string                  `json:"resource_group_crn"`
	ResourcePlanID     string                  `json:"resource_plan_id"`
	ResourceID         string                  `json:"resource_id"`
	TargetCRN          string                  `json:"target_crn"`
	Type               string                  `json:"type"`
	SubType            string                  `json:"sub_type"`
	State              string                  `json:"state"`
	StateReason        string                  `json:"state_reason,omitempty"`
	AllowCleanup       bool                    `json:"allow_cleanup"`
	Locked             bool                    `json:"locked"`
	OnetimeCredentials bool                    `json:"onetime_credentials"`
	Parameters         map[string]any          `json:"parameters"`
	Extensions         map[string]any          `json:"extensions"`
	DashboardURL       *string                 `json:"dashboard_url"`
	CreatedAt          *time.Time              `json:"created_at"`
	CreatedBy          string                  `json:"created_by"`
	UpdatedAt          *time.Time              `json:"updated_at"`
	UpdatedBy          string                  `json:"updated_by"`
	DeletedAt          *time.Time              `json:"deleted_at"`
	DeletedBy          string                  `json:"deleted_by"`
	ScheduledReclaimAt *time.Time              `json:"scheduled_reclaim_at"`
	ScheduledReclaimBy string                  `json:"scheduled_reclaim_by"`
	RestoredAt         *time.Time              `json:"restored_at"`
	RestoredBy         string                  `json:"restored_by"`
	PlanHistory        []controller.PlanChange `json:"plan_history"`
	Migrated           bool                    `json:"migrated"`
	ResourceKeysURL    string                  `json:"resource_keys_url"`
	LastOperation      lastOperationJSON       `json:"last_operation"`
	// Warnings are what the service's broker asked to show about the create.
	Warnings []string `json:"warnings,omitempty"`
}

type lastOperationJSON struct {
	Type        string `json:"type"`
	State       string `json:"state"`
	Async       bool   `json:"async"`
	Description string `json:"description"`
	Cancelable  bool   `json:"cancelable"`
	Poll        bool   `json:"poll"`
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func instanceURL(guid string) string { return "/v2/resource_instances/" + guid }

func toInstance(i *controller.Instance) instanceJSON {
	return instanceJSON{
		ID: i.CRN.String(), GUID: i.GUID, URL: instanceURL(i.GUID), CRN: i.CRN.String(), Name: i.Name,
		RegionID: i.Region, AccountID: i.AccountID, ResourceGroupID: i.ResourceGroupID,
		ResourceGroupCRN: "crn:v1:bluemix:public:resource-controller:global:a/" + i.AccountID + "::resource-group:" + i.ResourceGroupID,
		ResourcePlanID:   i.PlanID, ResourceID: i.ResourceID,
		TargetCRN: "crn:v1:bluemix:public:globalcatalog::::deployment:" + i.PlanID + "-" + i.Region,
		Type:      "service_instance", SubType: i.ServiceName, State: i.State, StateReason: i.StateReason, AllowCleanup: i.AllowCleanup,
		OnetimeCredentials: true, Parameters: i.Parameters, Extensions: map[string]any{},
		CreatedAt: timeOrNil(i.CreatedAt), CreatedBy: i.CreatedBy, UpdatedAt: timeOrNil(i.UpdatedAt), UpdatedBy: i.UpdatedBy,
		DeletedAt: timeOrNil(i.DeletedAt), DeletedBy: i.DeletedBy,
		ScheduledReclaimAt: timeOrNil(i.ScheduledReclaimAt), ScheduledReclaimBy: i.ScheduledReclaimBy,
		RestoredAt: timeOrNil(i.RestoredAt), RestoredBy: i.RestoredBy, PlanHistory: i.PlanHistory,
		ResourceKeysURL: instanceURL(i.GUID) + "/resource_keys",
		LastOperation: lastOperationJSON{Type: i.LastOperation.Type, State: i.LastOperation.State,
			Description: i.LastOperation.Description},
		Warnings: i.LastOperation.Warnings,
	}
}

type listJSON[T any] struct {
	RowsCount int     `json:"rows_count"`
	NextURL   *string `json:"next_url"`
	Resources []T     `json:"resources"`
}

// nextURL is the request's own URL with start set to the next page's token.
func nextURL(u *url.URL, start string) *string {
	if start == "" {
		return nil
	}
	q := u.Query()
	q.Set("start", start)
	s := u.Path + "?" + q.Encode()
	return &s
}

type keyJSON struct {
	ID                  string         `json:"id"`
	GUID                string         `json:"guid"`
	URL                 string         `json:"url"`
	CRN                 string         `json:"crn"`
	Name                string         `json:"name"`
	AccountID           string         `json:"account_id"`
	SourceCRN           string         `json:"source_crn"`
	Role                string         `json:"role"`
	State               string         `json:"state"`
	Credentials         map[string]any `json:"credentials"`
	IAMCompatible       bool           `json:"iam_compatible"`
	OnetimeCredentials  bool           `json:"onetime_credentials"`
	ResourceInstanceURL string         `json:"resource_instance_url"`
	CreatedAt           *time.Time     `json:"created_at"`
	CreatedBy           string         `json:"created_by"`
	UpdatedAt           *time.Time     `json:"updated_at"`
	DeletedAt           *time.Time     `json:"deleted_at"`
	DeletedBy           string         `json:"deleted_by"`
}

// redacted is what IBM shows in place of one-time credentials after creation.
var redacted = map[string]any{"REDACTED": "REDACTED"}

func toKey(k *controller.ResourceKey) keyJSON {
	creds := k.Credentials
	if creds == nil {
		creds = redacted
	}
	return keyJSON{ID: k.CRN.String(), GUID: k.GUID, URL: "/v2/resource_keys/" + k.GUID, CRN: k.CRN.String(), Name: k.Name,
		AccountID: k.AccountID, SourceCRN: k.InstanceCRN.String(), Role: k.Role, State: k.State, Credentials: creds,
		IAMCompatible: true, OnetimeCredentials: true, ResourceInstanceURL: instanceURL(k.InstanceGUID),
		CreatedAt: timeOrNil(k.CreatedAt), CreatedBy: k.CreatedBy, UpdatedAt: timeOrNil(k.UpdatedAt),
		DeletedAt: timeOrNil(k.DeletedAt), DeletedBy: k.DeletedBy}
}

type reclamationJSON struct {
	ID                 string         `json:"id"`
	EntityID           string         `json:"entity_id"`
	EntityTypeID       string         `json:"entity_type_id"`
	EntityCRN          string         `json:"entity_crn"`
	ResourceInstanceID string         `json:"resource_instance_id"`
	ResourceGroupID    string         `json:"resource_group_id"`
	AccountID          string         `json:"account_id"`
	PolicyID           string         `json:"policy_id"`
	State              string         `json:"state"`
	TargetTime         *time.Time     `json:"target_time"`
	CustomProperties   map[string]any `json:"custom_properties"`
	CreatedAt          *time.Time     `json:"created_at"`
	CreatedBy          string         `json:"created_by"`
	UpdatedAt          *time.Time     `json:"updated_at"`
	UpdatedBy          string         `json:"updated_by"`
}

func toReclamation(r *controller.Reclamation) reclamationJSON {
	props := map[string]any{}
	if r.LastError != "" {
		props["last_error"] = r.LastError
		props["attempts"] = r.Attempts
	}
	return reclamationJSON{ID: r.ID, EntityID: r.InstanceGUID, EntityTypeID: "service_instance", EntityCRN: r.InstanceCRN.String(),
		ResourceInstanceID: r.InstanceGUID, ResourceGroupID: r.ResourceGroupID, AccountID: r.AccountID, PolicyID: "",
		State: r.State, TargetTime: timeOrNil(r.TargetTime), CustomProperties: props,
		CreatedAt: timeOrNil(r.CreatedAt), CreatedBy: r.CreatedBy, UpdatedAt: timeOrNil(r.UpdatedAt), UpdatedBy: r.UpdatedBy}
}

type taskJSON struct {
	ID              string     `json:"id"`
	ResourceType    string     `json:"resource_type"`
	Description     string     `json:"description"`
	Status          string     `json:"status"`
	DeploymentID    string     `json:"deployment_id"`
	ProgressPercent int        `json:"progress_percent"`
	CreatedAt       time.Time  `json:"created_at"`
	UpdatedAt       *time.Time `json:"updated_at,omitempty"`
	Reason          string     `json:"reason,omitempty"`
}

func toTask(t *controller.Task) taskJSON {
	return taskJSON{ID: t.CRN.String(), ResourceType: t.ResourceType, Description: t.Description, Status: t.Status,
		DeploymentID: t.DeploymentCRN.String(), ProgressPercent: t.ProgressPercent, CreatedAt: t.CreatedAt,
		UpdatedAt: timeOrNil(t.UpdatedAt), Reason: t.Reason}
}

// Request bodies.

type createInstanceBody struct {
	Name           string         `json:"name"`
	ResourceID     string         `json:"resource_id"` // Keyline's clients name the service; IBM finds it from the plan
	Target         string         `json:"target"`
	ResourceGroup  string         `json:"resource_group"`
	ResourcePlanID string         `json:"resource_plan_id"`
	Tags           []string       `json:"tags"`
	AllowCleanup   bool           `json:"allow_cleanup"`
	Parameters     map[string]any `json:"parameters"`
	// The Cloud Databases API example puts the key CRNs at the top level of
	// the body; they mean the same as inside parameters.
	DiskEncryptionKeyCRN   *string `json:"disk_encryption_key_crn"`
	BackupEncryptionKeyCRN *string `json:"backup_encryption_key_crn"`
	// Its prose names the disk key "disk_encryption_key"; the service's
	// broker maps that name to disk_encryption_key_crn.
	DiskEncryptionKey *string `json:"disk_encryption_key"`
}

type updateInstanceBody struct {
	Name           *string        `json:"name"`
	Parameters     map[string]any `json:"parameters"`
	ResourcePlanID *string        `json:"resource_plan_id"`
	AllowCleanup   *bool          `json:"allow_cleanup"`
}

type createKeyBody struct {
	Name   string `json:"name"`
	Source string `json:"source"`
	Role   string `json:"role"`
}

type reclamationActionBody struct {
	RequestBy string `json:"request_by"`
	Comment   string `json:"comment"`
}
