// Package controller is Keyline's resource controller: the catalog of
// services, their instances and resource keys, the reclamation of deleted
// instances, and the tasks of long operations on them. Each service plugs in
// through a ServiceBroker; the controller owns the records and lifecycle.
//
// An instance's life, and the broker call at each step:
//
//	create ──Provision──▶ provisioning ──▶ active ◀──SetActive/SetInactive──▶ inactive
//	                           └─(error, or a restart)─▶ failed ──delete──Reclaim──▶ removed
//	active|inactive ──delete──Suspend──▶ pending_reclamation (+ reclamation SCHEDULED)
//	pending_reclamation ──restore──Resume──▶ active|inactive
//	pending_reclamation ──reclaim, or window ends──Reclaim──▶ removed
//
// Each state change is written in one transaction with its Activity Tracker
// event. A reclaim is an obligation kept in the database: it is claimed for
// a lease, retried with backoff while the broker fails, and taken up again
// after a restart, so brokers must accept a repeated Reclaim.
package controller

import (
	"context"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// Config holds the controller's dependencies.
type Config struct {
	DB         *store.DB
	Audit      *audit.Log // every change and refusal is recorded here
	Clock      clock.Clock
	Authorizer auth.Authorizer
	Logger     *slog.Logger
	// Sealer, when set, keeps new service credentials sealed at rest so that
	// users allowed to create credentials can view them again, as in the IBM
	// console. Without it credentials are shown once (onetime credentials).
	Sealer *seal.AEAD
	// Node is this process among those sharing the database
	// (cluster.Membership): it names the owner of the tasks and provisions
	// this process runs, and says whether another owner is still running.
	// Without one, this process is the only one.
	Node Node
}

// Node is this process in a cluster of processes sharing the database.
type Node interface {
	// Owner names this process (it changes when the process restarts).
	Owner() string
	// OwnerLive says, in tx, whether the process named owner still runs.
	OwnerLive(tx *store.Tx, owner string) (bool, error)
}

// soleProcess is the Node of a controller that is alone on its database.
type soleProcess string

func (p soleProcess) Owner() string { return string(p) }

func (p soleProcess) OwnerLive(_ *store.Tx, owner string) (bool, error) {
	return owner == string(p), nil
}

// Controller keeps the catalog, instances, resource keys, reclamations and tasks.
type Controller struct {
	db     *store.DB
	audit  *audit.Log
	clock  clock.Clock
	authz  auth.Authorizer
	logger *slog.Logger
	sealer *seal.AEAD

	mu       sync.RWMutex
	services []*catalogEntry

	wake  chan struct{} // nudges the reclamation scheduler when a reclamation is scheduled
	tasks *Tasks
	node  Node

	// instanceLocks serialize the lifecycle changes of one instance (update,
	// delete, restore, reclaim, new keys), which call its broker between
	// reading and writing the record. Writes also check the state they
	// started from, so that a change made elsewhere is refused, not lost.
	instanceLocks [64]sync.Mutex
}

// New opens the controller on db, migrating its schema. The work a stopped
// process left unfinished (provisions, tasks) is taken over by RunTakeovers;
// reclamations need nothing: they are durable obligations that Run picks up.
func New(ctx context.Context, cfg Config) (*Controller, error) {
	if cfg.DB == nil || cfg.Authorizer == nil || cfg.Audit == nil {
		return nil, errs.E("controller.New", errs.Invalid, "BAD_CONFIG", "the controller needs a database, an authorizer and an audit log")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := cfg.DB.Migrate(ctx, migrations); err != nil {
		return nil, err
	}
	if cfg.Node == nil {
		cfg.Node = soleProcess(uuid.NewString())
	}
	c := &Controller{db: cfg.DB, audit: cfg.Audit, clock: cfg.Clock, authz: cfg.Authorizer, logger: cfg.Logger, sealer: cfg.Sealer,
		wake: make(chan struct{}, 1), node: cfg.Node}
	c.tasks = &Tasks{c: c, takeovers: map[string]Takeover{}}
	return c, nil
}

// Register adds a service and its broker to the catalog.
func (c *Controller) Register(svc CatalogService, broker ServiceBroker) error {
	if err := svc.validate(); err != nil {
		return err
	}
	if broker == nil {
		return errs.Ef("controller.Register", errs.Invalid, "BAD_CATALOG", "catalog service %s needs a broker", svc.Name)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.services {
		if e.svc.Name == svc.Name {
			return errs.Ef("controller.Register", errs.Conflict, "BAD_CATALOG", "catalog service %s is already registered", svc.Name)
		}
		for _, p := range svc.Plans {
			if _, dup := e.svc.plan(p.ID); dup {
				return errs.Ef("controller.Register", errs.Conflict, "BAD_CATALOG", "plan id %s is already offered by %s", p.ID, e.svc.Name)
			}
		}
	}
	c.services = append(c.services, &catalogEntry{svc: svc, broker: broker})
	return nil
}

// Catalog lists the registered services.
func (c *Controller) Catalog() []CatalogService {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]CatalogService, len(c.services))
	for i, e := range c.services {
		out[i] = e.svc
	}
	return out
}

// Tasks is the registry of long operations on instances.
func (c *Controller) Tasks() *Tasks { return c.tasks }

func (c *Controller) entries() []*catalogEntry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return append([]*catalogEntry(nil), c.services...)
}

// service finds the catalog entry an instance belongs to.
func (c *Controller) service(op, name string) (*catalogEntry, error) {
	for _, e := range c.entries() {
		if e.svc.Name == name {
			return e, nil
		}
	}
	return nil, errs.Ef(op, errs.Unavailable, "SERVICE_UNAVAILABLE", "The service %s is not available", name)
}

// lock holds the lock of instance guid until the returned function is called.
func (c *Controller) lock(guid string) func() {
	h := fnv.New32a()
	h.Write([]byte(guid))
	m := &c.instanceLocks[h.Sum32()%uint32(len(c.instanceLocks))]
	m.Lock()
	return m.Unlock
}

// loadLocked finds an instance by GUID or CRN, locks it, and reads it again
// under the lock.
func (c *Controller) loadLocked(ctx context.Context, op, id string) (*Instance, func(), error) {
	inst, err := c.loadInstance(ctx, op, id)
	if err != nil {
		return nil, nil, err
	}
	unlock := c.lock(inst.GUID)
	if inst, err = c.loadInstance(ctx, op, inst.GUID); err != nil {
		unlock()
		return nil, nil, err
	}
	return inst, unlock, nil
}

func principal(ctx context.Context, op string) (*auth.Principal, error) {
	p := auth.FromContext(ctx)
	if p == nil {
		return nil, errs.E(op, errs.Unauthenticated, "UNAUTHENTICATED", "The request is not authenticated")
	}
	return p, nil
}

// authorize checks that the caller may perform action on inst. An instance
// of another account is reported as missing, so that its existence does not
// leak.
func (c *Controller) authorize(ctx context.Context, op string, p *auth.Principal, action string, inst *Instance) error {
	if inst.AccountID != p.AccountID {
		return errNoInstance(op)
	}
	return c.authz.Authorize(ctx, p, action, auth.Resource{AccountID: inst.AccountID, ServiceName: inst.ServiceName, ServiceInstance: inst.GUID})
}

func errNoInstance(op string) error {
	return errs.E(op, errs.NotExist, "INSTANCE_NOT_FOUND", "The resource instance could not be found")
}

// ts formats times with a fixed width so that the database orders and
// compares them as strings.
func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02T15:04:05.000000000Z")
}

func parseTS(s string) time.Time { return store.ParseTime(s) }

func (c *Controller) now() time.Time { return c.clock.Now().UTC() }

var migrations = []store.Migration{{ID: "controller/0001", SQL: `
CREATE TABLE rc_instances (
	guid TEXT PRIMARY KEY,
	crn TEXT NOT NULL UNIQUE,
	account_id TEXT NOT NULL,
	name TEXT NOT NULL,
	service_name TEXT NOT NULL,
	resource_id TEXT NOT NULL,
	resource_plan_id TEXT NOT NULL,
	region_id TEXT NOT NULL,
	resource_group_id TEXT NOT NULL,
	state TEXT NOT NULL,
	state_reason TEXT NOT NULL DEFAULT '',
	parameters TEXT NOT NULL,
	tags TEXT NOT NULL,
	allow_cleanup INTEGER NOT NULL,
	last_operation TEXT NOT NULL,
	plan_history TEXT NOT NULL,
	created_at TEXT NOT NULL,
	created_by TEXT NOT NULL,
	updated_at TEXT NOT NULL,
	updated_by TEXT NOT NULL,
	deleted_at TEXT NOT NULL DEFAULT '',
	deleted_by TEXT NOT NULL DEFAULT '',
	scheduled_reclaim_at TEXT NOT NULL DEFAULT '',
	scheduled_reclaim_by TEXT NOT NULL DEFAULT '',
	restored_at TEXT NOT NULL DEFAULT '',
	restored_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX rc_instances_account ON rc_instances (account_id, created_at, guid);
CREATE TABLE rc_resource_keys (
	guid TEXT PRIMARY KEY,
	crn TEXT NOT NULL UNIQUE,
	name TEXT NOT NULL,
	account_id TEXT NOT NULL,
	instance_guid TEXT NOT NULL REFERENCES rc_instances (guid),
	role TEXT NOT NULL,
	state TEXT NOT NULL,
	created_at TEXT NOT NULL,
	created_by TEXT NOT NULL,
	updated_at TEXT NOT NULL,
	deleted_at TEXT NOT NULL DEFAULT '',
	deleted_by TEXT NOT NULL DEFAULT ''
);
CREATE INDEX rc_resource_keys_instance ON rc_resource_keys (instance_guid, state);
CREATE INDEX rc_resource_keys_account ON rc_resource_keys (account_id, created_at, guid);
CREATE TABLE rc_reclamations (
	id TEXT PRIMARY KEY,
	instance_guid TEXT NOT NULL REFERENCES rc_instances (guid),
	account_id TEXT NOT NULL,
	resource_group_id TEXT NOT NULL,
	state TEXT NOT NULL,
	target_time TEXT NOT NULL,
	lease_until TEXT NOT NULL DEFAULT '',
	attempts INTEGER NOT NULL DEFAULT 0,
	last_error TEXT NOT NULL DEFAULT '',
	created_at TEXT NOT NULL,
	created_by TEXT NOT NULL,
	updated_at TEXT NOT NULL,
	updated_by TEXT NOT NULL
);
CREATE INDEX rc_reclamations_state ON rc_reclamations (state, target_time);
CREATE INDEX rc_reclamations_instance ON rc_reclamations (instance_guid);
CREATE TABLE rc_tasks (
	id TEXT PRIMARY KEY,
	crn TEXT NOT NULL UNIQUE,
	instance_guid TEXT NOT NULL REFERENCES rc_instances (guid),
	resource_type TEXT NOT NULL,
	description TEXT NOT NULL,
	status TEXT NOT NULL,
	progress_percent INTEGER NOT NULL,
	reason TEXT NOT NULL DEFAULT '',
	created_at TEXT NOT NULL,
	updated_at TEXT NOT NULL
);
CREATE INDEX rc_tasks_instance ON rc_tasks (instance_guid, created_at);
`}, {ID: "controller/0002_resource_key_credentials", SQL: `
ALTER TABLE rc_resource_keys ADD COLUMN sealed_credentials TEXT NOT NULL DEFAULT '';
`}, {ID: "controller/0003_owners", SQL: `
ALTER TABLE rc_instances ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE rc_tasks ADD COLUMN owner TEXT NOT NULL DEFAULT '';
`}}
