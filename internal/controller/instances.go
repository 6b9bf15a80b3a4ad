package controller

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Instance states, as the Resource Controller names them.
const (
	StateProvisioning       = "provisioning"
	StateActive             = "active"
	StateInactive           = "inactive" // the service has disabled it (e.g. its root key was destroyed)
	StateFailed             = "failed"
	StatePendingReclamation = "pending_reclamation"
	StateRemoved            = "removed"
)

var allStates = []string{StateActive, StateProvisioning, "pre_provisioning", StateInactive, StateFailed, StateRemoved, StatePendingReclamation}

// Instance is a service instance: a Key Protect instance or an Event Streams deployment.
type Instance struct {
	GUID            string
	CRN             crn.CRN
	Name            string
	AccountID       string
	ServiceName     string // "kms", "messagehub" (the CRN service name; RC's sub_type)
	ResourceID      string // the catalog service id
	PlanID          string
	Region          string
	ResourceGroupID string
	State           string
	StateReason     string // why the service made it inactive
	Parameters      map[string]any
	Tags            []string
	AllowCleanup    bool
	LastOperation   Operation
	PlanHistory     []PlanChange

	CreatedAt, UpdatedAt, DeletedAt, ScheduledReclaimAt, RestoredAt time.Time
	CreatedBy, UpdatedBy, DeletedBy, ScheduledReclaimBy, RestoredBy string
}

// Operation is the last operation on an instance.
type Operation struct {
	Type        string   `json:"type"`  // create, update, delete, reclamation
	State       string   `json:"state"` // in progress, succeeded, failed
	Description string   `json:"description"`
	Warnings    []string `json:"warnings,omitempty"`
}

func (o Operation) json() string {
	b, _ := json.Marshal(o)
	return string(b)
}

// PlanChange is an entry of an instance's plan history.
type PlanChange struct {
	PlanID      string    `json:"resource_plan_id"`
	StartDate   time.Time `json:"start_date"`
	RequestorID string    `json:"requestor_id"`
}

// CreateInstanceRequest asks for a new instance.
type CreateInstanceRequest struct {
	Name          string
	Service       string // resource_id: a service name or catalog id; "" finds the service by the plan
	Target        string // region, or "blue-<region>" / "bluemix-<region>"
	ResourceGroup string // "" is the account's default group
	PlanID        string // resource_plan_id: a plan id or a plan name
	Tags          []string
	AllowCleanup  bool
	Parameters    map[string]any
}

// DefaultResourceGroup is the group of instances created without one.
const DefaultResourceGroup = "default"

// CreateInstance provisions a new instance through its service's broker. The
// instance is recorded as provisioning first, so that a broker that fails or
// a process that stops leaves a failed instance, never an unrecorded one.
func (c *Controller) CreateInstance(ctx context.Context, req CreateInstanceRequest) (*Instance, error) {
	const op = "controller.CreateInstance"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	entry, plan, region, err := c.validateCreate(req)
	// A create refused before it starts is recorded on the service in the
	// account (a CRN without instance): no instance exists.
	refused := func(err error) (*Instance, error) {
		c.recordFailure(ctx, entry.svc.Name+".instance.create", &Instance{CRN: crn.New(entry.svc.Name, region, p.AccountID, ""),
			Name: req.Name, ServiceName: entry.svc.Name}, err)
		return nil, err
	}
	if err != nil {
		if entry != nil {
			return refused(err)
		}
		return nil, err
	}
	svc := entry.svc
	guid := uuid.NewString()
	now := c.now()
	inst := &Instance{
		GUID: guid, CRN: crn.New(svc.Name, region, p.AccountID, guid), Name: req.Name, AccountID: p.AccountID,
		ServiceName: svc.Name, ResourceID: svc.ID, PlanID: plan.ID, Region: region, ResourceGroupID: req.ResourceGroup,
		State: StateProvisioning, Parameters: req.Parameters, Tags: req.Tags, AllowCleanup: req.AllowCleanup,
		LastOperation: Operation{Type: "create", State: "in progress", Description: "Provision in progress"},
		PlanHistory:   []PlanChange{{PlanID: plan.ID, StartDate: now, RequestorID: p.IAMID}},
		CreatedAt:     now, CreatedBy: p.IAMID, UpdatedAt: now, UpdatedBy: p.IAMID,
	}
	if inst.ResourceGroupID == "" {
		inst.ResourceGroupID = DefaultResourceGroup
	}
	if inst.Parameters == nil {
		inst.Parameters = map[string]any{}
	}
	if inst.Tags == nil {
		inst.Tags = []string{}
	}
	action := svc.Name + ".instance.create"
	if err := c.authz.Authorize(ctx, p, auth.InstanceCreate, auth.Resource{AccountID: p.AccountID, ServiceName: svc.Name}); err != nil {
		return refused(err)
	}
	if checker, ok := entry.broker.(ParameterChecker); ok {
		if inst.Parameters, err = checker.CheckParameters(inst.Parameters); err != nil {
			return refused(err)
		}
	}
	if err := c.db.Tx(ctx, func(tx *store.Tx) error {
		if err := insertInstance(tx, inst); err != nil {
			return err
		}
		// This process owns the provision until it records how it ended.
		_, err := tx.Exec(`UPDATE rc_instances SET owner = ? WHERE guid = ?`, c.node.Owner(), inst.GUID)
		return err
	}); err != nil {
		return nil, err
	}
	// From here the operation runs to its end and is recorded even if the
	// caller goes away: the broker's work must not go unrecorded.
	ctx = context.WithoutCancel(ctx)
	warnings, perr := entry.broker.Provision(ctx, *inst, inst.Parameters)
	inst.UpdatedAt = c.now()
	if perr != nil {
		perr = brokerError(op, perr)
		inst.State = StateFailed
		inst.LastOperation = Operation{Type: "create", State: "failed", Description: safeMessage(perr)}
	} else {
		inst.State = StateActive
		inst.LastOperation = Operation{Type: "create", State: "succeeded", Description: "Provision completed successfully", Warnings: warnings}
	}
	err = c.db.Tx(ctx, func(tx *store.Tx) error {
		if err := updateInstance(tx, inst, StateProvisioning); err != nil {
			return err
		}
		return c.appendEvent(ctx, tx, eventFor(action, inst, perr).withStatus(http.StatusCreated))
	})
	if err != nil {
		return nil, err
	}
	if perr != nil {
		return nil, perr
	}
	return inst, nil
}

func (c *Controller) validateCreate(req CreateInstanceRequest) (*catalogEntry, Plan, string, error) {
	const op = "controller.CreateInstance"
	if req.PlanID == "" {
		return nil, Plan{}, "", errs.E(op, errs.Invalid, "MISSING_FIELD", "The resource_plan_id field is required").On("field", "resource_plan_id")
	}
	entry, plan, err := findPlan(c.entries(), req.Service, req.PlanID)
	if err != nil {
		return nil, Plan{}, "", err
	}
	if err := validateName(op, req.Name); err != nil {
		return entry, Plan{}, "", err
	}
	if req.Target == "" {
		return entry, Plan{}, "", errs.E(op, errs.Invalid, "MISSING_FIELD", "The target field is required: the region to create the instance in").On("field", "target")
	}
	region, ok := entry.svc.region(req.Target)
	if !ok {
		return entry, Plan{}, "", errs.Ef(op, errs.Invalid, "INVALID_TARGET", "The target %q is not a region where %s is offered (%s)",
			req.Target, entry.svc.DisplayName, strings.Join(entry.svc.Regions, ", ")).On("field", "target")
	}
	if req.ResourceGroup != "" && !isGroupID(req.ResourceGroup) {
		return entry, Plan{}, region, errs.E(op, errs.Invalid, "INVALID_RESOURCE_GROUP", "The resource_group must be an id of up to 64 letters, digits, '-' or '_'").On("field", "resource_group")
	}
	for _, tag := range req.Tags {
		if tag == "" || len(tag) > 128 {
			return entry, Plan{}, region, errs.E(op, errs.Invalid, "INVALID_TAG", "A tag must have 1 to 128 characters").On("field", "tags")
		}
	}
	return entry, plan, region, nil
}

// validateName applies IBM's rule: up to 180 characters, letters, digits,
// spaces and - . _ : only.
func validateName(op, name string) error {
	if strings.TrimSpace(name) == "" {
		return errs.E(op, errs.Invalid, "MISSING_FIELD", "The name field is required").On("field", "name")
	}
	if len([]rune(name)) > 180 {
		return errs.E(op, errs.Invalid, "INVALID_NAME", "The name must have at most 180 characters").On("field", "name")
	}
	for _, r := range name {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune(" -._:", r) {
			return errs.E(op, errs.Invalid, "INVALID_NAME", "The name may contain only letters, digits, spaces and the characters - . _ :").On("field", "name")
		}
	}
	return nil
}

func isGroupID(s string) bool {
	if len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}

// brokerError keeps a broker's errs error as it is (its kind, code and
// message are meant for the caller) and hides any other error behind a
// generic one.
func brokerError(op string, err error) error {
	if errs.As(err) != nil {
		return err
	}
	return errs.E(op, errs.Internal, "BROKER_ERROR", "The service could not complete the operation").Because(err)
}

func safeMessage(err error) string {
	if e := errs.As(err); e != nil {
		return e.Msg
	}
	return "An internal error occurred"
}

// GetInstance returns an instance by GUID or CRN, in any state.
func (c *Controller) GetInstance(ctx context.Context, id string) (*Instance, error) {
	const op = "controller.GetInstance"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	inst, err := c.loadInstance(ctx, op, id)
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, op, p, auth.InstanceRead, inst); err != nil {
		return nil, err
	}
	return inst, nil
}

func (c *Controller) loadInstance(ctx context.Context, op, id string) (*Instance, error) {
	var inst *Instance
	err := c.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		inst, err = instanceByID(tx, op, id)
		return err
	})
	return inst, err
}

// instanceByID finds an instance by GUID or by CRN.
func instanceByID(tx *store.Tx, op, id string) (*Instance, error) {
	col := "guid"
	if strings.HasPrefix(id, "crn:") {
		parsed, err := crn.Parse(id)
		if err != nil {
			return nil, err
		}
		col, id = "crn", parsed.Instance().String()
	}
	inst, err := scanInstance(tx.QueryRow(`SELECT `+instanceColumns+` FROM rc_instances WHERE `+col+` = ?`, id))
	if store.IsNoRows(err) {
		return nil, errNoInstance(op)
	}
	return inst, err
}

// InstanceFilter narrows ListInstances; zero fields do not filter.
type InstanceFilter struct {
	GUID, Name, ResourceGroupID, ResourceID, ResourcePlanID, Type, SubType string
	States                                                                 []string // nil: active and provisioning
	UpdatedFrom, UpdatedTo                                                 time.Time
	Limit                                                                  int    // 0: DefaultLimit
	Start                                                                  string // a NextStart token
}

// InstancePage is one page of instances.
type InstancePage struct {
	Instances []Instance
	NextStart string // "" on the last page
}

// Page sizes of list calls.
const (
	DefaultLimit = 100
	MaxLimit     = 100
)

// ListInstances lists the caller's account's instances that the caller may
// read, oldest first.
func (c *Controller) ListInstances(ctx context.Context, f InstanceFilter) (*InstancePage, error) {
	const op = "controller.ListInstances"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	limit, err := pageLimit(op, f.Limit)
	if err != nil {
		return nil, err
	}
	states := f.States
	if len(states) == 0 {
		states = []string{StateActive, StateProvisioning}
	}
	for _, s := range states {
		if !slices.Contains(allStates, s) {
			return nil, errs.Ef(op, errs.Invalid, "INVALID_STATE", "The state %q is not one of %s", s, strings.Join(allStates, ", ")).On("query_param", "state")
		}
	}
	after, err := decodeCursor(op, f.Start)
	if err != nil {
		return nil, err
	}
	if f.Type != "" && f.Type != "service_instance" {
		return &InstancePage{}, nil
	}
	where := []string{"account_id = ?"}
	args := []any{p.AccountID}
	add := func(cond string, vals ...any) { where = append(where, cond); args = append(args, vals...) }
	if f.GUID != "" {
		add("guid = ?", f.GUID)
	}
	if f.Name != "" {
		add("name = ?", f.Name)
	}
	if f.ResourceGroupID != "" {
		add("resource_group_id = ?", f.ResourceGroupID)
	}
	if f.ResourceID != "" {
		add("(resource_id = ? OR service_name = ?)", f.ResourceID, f.ResourceID)
	}
	if f.ResourcePlanID != "" {
		add("resource_plan_id = ?", f.ResourcePlanID)
	}
	if f.SubType != "" {
		add("service_name = ?", f.SubType)
	}
	if !f.UpdatedFrom.IsZero() {
		add("updated_at >= ?", ts(f.UpdatedFrom))
	}
	if !f.UpdatedTo.IsZero() {
		add("updated_at <= ?", ts(f.UpdatedTo))
	}
	add("state IN ("+strings.TrimSuffix(strings.Repeat("?,", len(states)), ",")+")", toAny(states)...)
	var page []Instance
	// Rows the caller may not read are skipped, so fetch in batches until the
	// page (plus one row, to know whether there is a next page) is full.
	for {
		batch, err := c.instanceBatch(ctx, where, args, after, limit+1)
		if err != nil {
			return nil, err
		}
		for i := range batch {
			err := c.authz.Authorize(ctx, p, auth.InstanceRead, auth.Resource{AccountID: batch[i].AccountID, ServiceName: batch[i].ServiceName, ServiceInstance: batch[i].GUID})
			if errs.Is(errs.Permission, err) {
				continue
			}
			if err != nil {
				return nil, err
			}
			page = append(page, batch[i])
			if len(page) == limit+1 {
				break
			}
		}
		if len(page) == limit+1 || len(batch) < limit+1 {
			break
		}
		last := batch[len(batch)-1]
		after = &cursor{at: ts(last.CreatedAt), id: last.GUID}
	}
	out := &InstancePage{Instances: page}
	if len(page) > limit {
		last := page[limit-1]
		out.Instances = page[:limit]
		out.NextStart = encodeCursor(cursor{at: ts(last.CreatedAt), id: last.GUID})
	}
	if out.Instances == nil {
		out.Instances = []Instance{}
	}
	return out, nil
}

func (c *Controller) instanceBatch(ctx context.Context, where []string, args []any, after *cursor, n int) ([]Instance, error) {
	if after != nil {
		where = append(where[:len(where):len(where)], "(created_at > ? OR (created_at = ? AND guid > ?))")
		args = append(args[:len(args):len(args)], after.at, after.at, after.id)
	}
	return c.queryInstances(ctx, strings.Join(where, " AND ")+` ORDER BY created_at, guid LIMIT ?`, append(args, n)...)
}

// queryInstances reads the instances of "SELECT ... FROM rc_instances WHERE <cond>".
func (c *Controller) queryInstances(ctx context.Context, cond string, args ...any) ([]Instance, error) {
	var out []Instance
	err := c.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT `+instanceColumns+` FROM rc_instances WHERE `+cond, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			inst, err := scanInstance(rows)
			if err != nil {
				return err
			}
			out = append(out, *inst)
		}
		return rows.Err()
	})
	return out, err
}

func pageLimit(op string, limit int) (int, error) {
	switch {
	case limit == 0:
		return DefaultLimit, nil
	case limit < 0 || limit > MaxLimit:
		return 0, errs.Ef(op, errs.Invalid, "INVALID_LIMIT", "The limit must be between 1 and %d", MaxLimit).On("query_param", "limit")
	}
	return limit, nil
}

// cursor is the position after which a page starts: a creation time and id.
type cursor struct{ at, id string }

func encodeCursor(c cursor) string {
	return base64.RawURLEncoding.EncodeToString([]byte(c.at + "|" + c.id))
}

func decodeCursor(op, s string) (*cursor, error) {
	if s == "" {
		return nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	at, id, ok := strings.Cut(string(b), "|")
	if err != nil || !ok || parseTS(at).IsZero() || id == "" {
		return nil, errs.E(op, errs.Invalid, "INVALID_START", "The start token is not one this service returned in a next_url").On("query_param", "start")
	}
	return &cursor{at: at, id: id}, nil
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// UpdateInstanceRequest changes an instance; nil fields stay as they are.
type UpdateInstanceRequest struct {
	Name         *string
	Parameters   map[string]any // merged into the instance's parameters
	PlanID       *string        // a plan id or name of the same service
	AllowCleanup *bool
}

// UpdateInstance renames an instance, changes its plan or cleanup flag, or
// passes new parameters to its broker.
func (c *Controller) UpdateInstance(ctx context.Context, id string, req UpdateInstanceRequest) (*Instance, error) {
	const op = "controller.UpdateInstance"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	inst, unlock, err := c.loadLocked(ctx, op, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	action := inst.ServiceName + ".instance.update"
	if err := c.authorize(ctx, op, p, auth.InstanceUpdate, inst); err != nil {
		c.recordFailure(ctx, action, inst, err)
		return nil, err
	}
	entry, err := c.service(op, inst.ServiceName)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*Instance, error) {
		c.recordFailure(ctx, action, inst, err)
		return nil, err
	}
	from := inst.State
	if from != StateActive && from != StateInactive {
		return fail(errs.Ef(op, errs.Conflict, "INSTANCE_NOT_ACTIVE", "The instance is %s; only an active or inactive instance can be updated", inst.State))
	}
	now := c.now()
	if req.Name != nil {
		if err := validateName(op, *req.Name); err != nil {
			return fail(err)
		}
		inst.Name = *req.Name
	}
	if req.PlanID != nil {
		plan, ok := entry.svc.plan(*req.PlanID)
		if !ok {
			for _, pl := range entry.svc.Plans {
				if pl.Name == *req.PlanID {
					plan, ok = pl, true
				}
			}
		}
		if !ok {
			return fail(errs.Ef(op, errs.Invalid, "INVALID_PLAN", "The resource plan %q is not a plan of %s", *req.PlanID, entry.svc.DisplayName).On("field", "resource_plan_id"))
		}
		if plan.ID != inst.PlanID {
			inst.PlanID = plan.ID
			inst.PlanHistory = append(inst.PlanHistory, PlanChange{PlanID: plan.ID, StartDate: now, RequestorID: p.IAMID})
		}
	}
	if req.AllowCleanup != nil {
		inst.AllowCleanup = *req.AllowCleanup
	}
	if len(req.Parameters) > 0 {
		ctx = context.WithoutCancel(ctx) // the broker's change must be recorded
		updater, ok := entry.broker.(ParameterUpdater)
		if !ok {
			return fail(errs.Ef(op, errs.Invalid, "PARAMETERS_NOT_UPDATABLE", "%s does not accept parameter changes on an existing instance; create a new instance instead", entry.svc.DisplayName).On("field", "parameters"))
		}
		if err := updater.UpdateParameters(ctx, *inst, req.Parameters); err != nil {
			return fail(brokerError(op, err))
		}
		for k, v := range req.Parameters {
			inst.Parameters[k] = v
		}
	}
	inst.UpdatedAt, inst.UpdatedBy = now, p.IAMID
	inst.LastOperation = Operation{Type: "update", State: "succeeded", Description: "Update completed successfully"}
	err = c.db.Tx(ctx, func(tx *store.Tx) error {
		if err := updateInstance(tx, inst, from); err != nil {
			return err
		}
		return c.appendEvent(ctx, tx, eventFor(action, inst, nil))
	})
	if err != nil {
		return nil, err
	}
	return inst, nil
}

// DeleteInstance deletes an instance: its broker suspends it and it waits in
// pending_reclamation for its service's reclamation window, after which it
// is reclaimed (see Run). A failed instance is reclaimed at once. Resource
// keys must be deleted first, or together with recursive.
func (c *Controller) DeleteInstance(ctx context.Context, id string, recursive bool) (*Instance, error) {
	const op = "controller.DeleteInstance"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	inst, unlock, err := c.loadLocked(ctx, op, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	from := inst.State
	action := inst.ServiceName + ".instance.delete"
	if err := c.authorize(ctx, op, p, auth.InstanceDelete, inst); err != nil {
		c.recordFailure(ctx, action, inst, err)
		return nil, err
	}
	fail := func(err error) (*Instance, error) {
		c.recordFailure(ctx, action, inst, err)
		return nil, err
	}
	entry, err := c.service(op, inst.ServiceName)
	if err != nil {
		return fail(err)
	}
	switch inst.State {
	case StateActive, StateInactive, StateFailed:
	case StatePendingReclamation, StateRemoved:
		return fail(errs.E(op, errs.Gone, "INSTANCE_DELETED", "The instance has already been deleted"))
	default:
		return fail(errs.Ef(op, errs.Conflict, "INSTANCE_BUSY", "The instance is %s and cannot be deleted now", inst.State))
	}
	keys, err := c.activeKeys(ctx, inst.GUID)
	if err != nil {
		return nil, err
	}
	if len(keys) > 0 && !recursive {
		return fail(errs.Ef(op, errs.Conflict, "INSTANCE_HAS_KEYS", "The instance has %d resource keys; delete them first or delete recursively", len(keys)))
	}
	// From here the operation runs to its end and is recorded even if the
	// caller goes away: the broker's work must not go unrecorded.
	ctx = context.WithoutCancel(ctx)
	for _, k := range keys {
		if err := c.revoke(ctx, entry, inst, &k); err != nil {
			return fail(err)
		}
	}
	now := c.now()
	inst.DeletedAt, inst.DeletedBy, inst.UpdatedAt, inst.UpdatedBy = now, p.IAMID, now, p.IAMID
	if inst.State == StateFailed {
		// Nothing was provisioned to keep: erase what the broker may have
		// begun. A broker that never got as far as knowing the instance has
		// nothing to erase.
		if err := entry.broker.Reclaim(ctx, *inst); err != nil && !errs.Is(errs.NotExist, err) {
			return fail(brokerError(op, err))
		}
		inst.State = StateRemoved
		inst.LastOperation = Operation{Type: "delete", State: "succeeded", Description: "Instance removed"}
		err = c.db.Tx(ctx, func(tx *store.Tx) error {
			if err := c.removeKeys(ctx, tx, inst, keys, p.IAMID); err != nil {
				return err
			}
			if err := updateInstance(tx, inst, from); err != nil {
				return err
			}
			return c.appendEvent(ctx, tx, eventFor(action, inst, nil).withStatus(http.StatusNoContent))
		})
		if err != nil {
			return nil, err
		}
		return inst, nil
	}
	if err := entry.broker.Suspend(ctx, *inst); err != nil {
		return fail(brokerError(op, err))
	}
	inst.State = StatePendingReclamation
	inst.ScheduledReclaimAt, inst.ScheduledReclaimBy = now, p.IAMID
	inst.LastOperation = Operation{Type: "delete", State: "succeeded", Description: "Instance is pending reclamation"}
	rec := Reclamation{ID: strings.ReplaceAll(uuid.NewString(), "-", ""), InstanceGUID: inst.GUID, InstanceCRN: inst.CRN,
		AccountID: inst.AccountID, ResourceGroupID: inst.ResourceGroupID, State: ReclamationScheduled,
		TargetTime: now.Add(entry.svc.window()), CreatedAt: now, CreatedBy: p.IAMID, UpdatedAt: now, UpdatedBy: p.IAMID}
	err = c.db.Tx(ctx, func(tx *store.Tx) error {
		if err := c.removeKeys(ctx, tx, inst, keys, p.IAMID); err != nil {
			return err
		}
		if err := updateInstance(tx, inst, from); err != nil {
			return err
		}
		if err := insertReclamation(tx, &rec); err != nil {
			return err
		}
		if err := c.appendEvent(ctx, tx, eventFor(action, inst, nil).withStatus(http.StatusAccepted)); err != nil {
			return err
		}
		return c.appendEvent(ctx, tx, eventFor(inst.ServiceName+".instance.schedule_reclaim", inst, nil).withStatus(http.StatusAccepted))
	})
	if err != nil {
		// The record still says active: undo the suspension so they agree.
		// The record keeps the condition it had; the resumed service is in
		// the same one.
		hctx, _ := holding(ctx, inst.GUID)
		if rerr := entry.broker.Resume(hctx, *inst); rerr != nil {
			c.logger.Error("resume after failed delete", "instance", inst.GUID, "err", rerr)
		}
		return nil, err
	}
	c.nudge()
	return inst, nil
}

const instanceColumns = `guid, crn, account_id, name, service_name, resource_id, resource_plan_id, region_id,
	resource_group_id, state, state_reason, parameters, tags, allow_cleanup, last_operation, plan_history,
	created_at, created_by, updated_at, updated_by, deleted_at, deleted_by,
	scheduled_reclaim_at, scheduled_reclaim_by, restored_at, restored_by`

type scanner interface{ Scan(...any) error }

func scanInstance(row scanner) (*Instance, error) {
	var inst Instance
	var crnStr, params, tags, lastOp, history string
	var created, updated, deleted, scheduled, restored string
	var cleanup int
	err := row.Scan(&inst.GUID, &crnStr, &inst.AccountID, &inst.Name, &inst.ServiceName, &inst.ResourceID, &inst.PlanID,
		&inst.Region, &inst.ResourceGroupID, &inst.State, &inst.StateReason, &params, &tags, &cleanup, &lastOp, &history,
		&created, &inst.CreatedBy, &updated, &inst.UpdatedBy, &deleted, &inst.DeletedBy,
		&scheduled, &inst.ScheduledReclaimBy, &restored, &inst.RestoredBy)
	if err != nil {
		return nil, err
	}
	if inst.CRN, err = crn.Parse(crnStr); err != nil {
		return nil, errs.Internalf("controller.scanInstance", err)
	}
	for _, f := range []struct {
		s string
		v any
	}{{params, &inst.Parameters}, {tags, &inst.Tags}, {lastOp, &inst.LastOperation}, {history, &inst.PlanHistory}} {
		if err := json.Unmarshal([]byte(f.s), f.v); err != nil {
			return nil, errs.Internalf("controller.scanInstance", err)
		}
	}
	inst.AllowCleanup = cleanup != 0
	inst.CreatedAt, inst.UpdatedAt, inst.DeletedAt = parseTS(created), parseTS(updated), parseTS(deleted)
	inst.ScheduledReclaimAt, inst.RestoredAt = parseTS(scheduled), parseTS(restored)
	return &inst, nil
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		// Parameters come from decoded JSON, so they always encode.
		panic(err)
	}
	return string(b)
}

func insertInstance(tx *store.Tx, inst *Instance) error {
	_, err := tx.Exec(`INSERT INTO rc_instances (`+instanceColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		inst.GUID, inst.CRN.String(), inst.AccountID, inst.Name, inst.ServiceName, inst.ResourceID, inst.PlanID, inst.Region,
		inst.ResourceGroupID, inst.State, inst.StateReason, mustJSON(inst.Parameters), mustJSON(inst.Tags), boolInt(inst.AllowCleanup),
		inst.LastOperation.json(), mustJSON(inst.PlanHistory),
		ts(inst.CreatedAt), inst.CreatedBy, ts(inst.UpdatedAt), inst.UpdatedBy, ts(inst.DeletedAt), inst.DeletedBy,
		ts(inst.ScheduledReclaimAt), inst.ScheduledReclaimBy, ts(inst.RestoredAt), inst.RestoredBy)
	return err
}

// updateInstance writes inst over its record, if the record is still in
// state from.
func updateInstance(tx *store.Tx, inst *Instance, from string) error {
	res, err := tx.Exec(`UPDATE rc_instances SET name = ?, resource_plan_id = ?, state = ?, state_reason = ?, parameters = ?, tags = ?,
		allow_cleanup = ?, last_operation = ?, plan_history = ?, updated_at = ?, updated_by = ?, deleted_at = ?, deleted_by = ?,
		scheduled_reclaim_at = ?, scheduled_reclaim_by = ?, restored_at = ?, restored_by = ? WHERE guid = ? AND state = ?`,
		inst.Name, inst.PlanID, inst.State, inst.StateReason, mustJSON(inst.Parameters), mustJSON(inst.Tags), boolInt(inst.AllowCleanup),
		inst.LastOperation.json(), mustJSON(inst.PlanHistory), ts(inst.UpdatedAt), inst.UpdatedBy, ts(inst.DeletedAt), inst.DeletedBy,
		ts(inst.ScheduledReclaimAt), inst.ScheduledReclaimBy, ts(inst.RestoredAt), inst.RestoredBy, inst.GUID, from)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return errs.E("controller.updateInstance", errs.Conflict, "INSTANCE_CHANGED", "The instance was changed by another request; read it and try again")
	}
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// SetInactive records that the service has disabled an active instance, and
// why (its root key was destroyed: the data is unreadable but the instance's
// metadata stays readable). Brokers call it; it is not an API of users.
func (c *Controller) SetInactive(ctx context.Context, guid, reason string) error {
	return c.setCondition(ctx, guid, StateActive, StateInactive, reason)
}

// SetActive records that the service has enabled an inactive instance again.
func (c *Controller) SetActive(ctx context.Context, guid string) error {
	return c.setCondition(ctx, guid, StateInactive, StateActive, "")
}

// setCondition does not take the instance's lock: brokers report from
// under their own locks, which lifecycle changes holding the instance's lock
// wait for in turn (a restore resuming a deployment that a key event is
// locking). The write checks the state it started from instead, and reads
// again when another change got there first.
func (c *Controller) setCondition(ctx context.Context, guid, from, to, reason string) error {
	const op = "controller.SetCondition"
	if h, ok := ctx.Value(heldKey{}).(*heldCondition); ok && h.guid == guid {
		h.reported, h.state, h.reason = true, to, reason
		return nil
	}
	for attempt := 0; ; attempt++ {
		inst, err := c.loadInstance(ctx, op, guid)
		if err != nil {
			return err
		}
		if inst.State == to && inst.StateReason == reason {
			return nil
		}
		if inst.State != from && inst.State != to {
			return errs.Ef(op, errs.Conflict, "INSTANCE_NOT_ACTIVE", "The instance is %s", inst.State)
		}
		prev := inst.State
		inst.State, inst.StateReason, inst.UpdatedAt = to, reason, c.now()
		err = c.db.Tx(ctx, func(tx *store.Tx) error { return updateInstance(tx, inst, prev) })
		if !errs.Is(errs.Conflict, err) || attempt == 2 {
			return err
		}
	}
}

// heldCondition takes the condition a broker reports (SetActive,
// SetInactive) about the instance whose lifecycle change holds its lock and
// is calling that broker: the instance is between states, so the change
// itself applies the condition when it writes the instance.
type heldCondition struct {
	guid          string
	reported      bool
	state, reason string
}

type heldKey struct{}

// holding returns ctx carrying a heldCondition for inst: pass it to the
// broker calls made under inst's lock. Brokers report on the calling
// goroutine.
func holding(ctx context.Context, guid string) (context.Context, *heldCondition) {
	h := &heldCondition{guid: guid}
	return context.WithValue(ctx, heldKey{}, h), h
}

// LookupInstance returns an instance by GUID or CRN, in any state, without
// checking a caller: it is for services acting on their own instances (a
// broker starting a task after a key rotation), never for user requests.
func (c *Controller) LookupInstance(ctx context.Context, id string) (*Instance, error) {
	return c.loadInstance(ctx, "controller.LookupInstance", id)
}

// InstancesOf returns every instance of a service in one of states (all
// states when none is given), oldest first, without checking a caller: a
// service reopens its active instances with it when the process starts.
func (c *Controller) InstancesOf(ctx context.Context, service string, states ...string) ([]Instance, error) {
	where, args := "service_name = ?", []any{service}
	if len(states) > 0 {
		where += " AND state IN (" + strings.TrimSuffix(strings.Repeat("?,", len(states)), ",") + ")"
		args = append(args, toAny(states)...)
	}
	return c.queryInstances(ctx, where+` ORDER BY created_at, guid`, args...)
}
