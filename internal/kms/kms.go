// Package kms is Keyline's Key Protect: KMS instances, root and standard keys
// with versions sealed under the master key, wrap/unwrap/rewrap, rotation
// (manual and by policy), deletion with its safeguards, registrations of the
// cloud resources a key protects, and durable key lifecycle events for the
// services that registered them. Every call is authorized through
// auth.Authorizer and recorded in the Activity Tracker.
package kms

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// Key states (NIST SP 800-57, as Key Protect numbers them; there is no 4).
const (
	StatePreActivation = 0
	StateActive        = 1
	StateSuspended     = 2
	StateDeactivated   = 3
	StateDestroyed     = 5
)

// Windows of the key lifecycle.
const (
	RotationMinInterval = time.Hour
	DualAuthWindow      = 7 * 24 * time.Hour
	RestoreMinDelay     = 30 * time.Second
	RestoreWindow       = 30 * 24 * time.Hour
	PurgeMinDelay       = 4 * time.Hour
	AutoPurgeAfter      = 90 * 24 * time.Hour
	SyncMinInterval     = time.Hour
	monthLength         = 30 * 24 * time.Hour
)

// Instance is a Key Protect instance, created by the resource controller.
type Instance struct {
	GUID      string
	CRN       string
	AccountID string
	Region    string
}

// Config is what the service needs.
type Config struct {
	DB         *store.DB
	Master     *seal.AEAD // seals all key material at rest
	Clock      clock.Clock
	Authorizer auth.Authorizer
	Audit      Auditor
	Logger     *slog.Logger
	// SchedulerTick is how often the scheduler looks for due rotations,
	// expirations and purges (default one minute).
	SchedulerTick time.Duration
}

// Service is the KMS.
type Service struct {
	db     *store.DB
	master *seal.AEAD
	clock  clock.Clock
	authz  auth.Authorizer
	audit  Auditor
	log    *slog.Logger
	tick   time.Duration

	hot       *hotCache
	allowedIP *allowedIPIndex // enabled allowedIP policies, by instance

	notifyMu sync.Mutex
	notify   map[string]chan struct{}

	// feed keeps the caches true when other nodes share the database
	// (JoinCluster); nil: this process is alone.
	feed *cluster.Feed
}

// New migrates the KMS tables and returns the service.
func New(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.DB == nil || cfg.Master == nil || cfg.Authorizer == nil || cfg.Audit == nil {
		return nil, errs.E("kms.New", errs.Internal, "", "kms: DB, Master, Authorizer and Audit are required")
	}
	if err := cfg.DB.Migrate(ctx, migrations); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SchedulerTick <= 0 {
		cfg.SchedulerTick = time.Minute
	}
	s := &Service{db: cfg.DB, master: cfg.Master, clock: cfg.Clock, authz: cfg.Authorizer, audit: cfg.Audit,
		log: cfg.Logger, tick: cfg.SchedulerTick, hot: newHotCache(), allowedIP: newAllowedIPIndex(), notify: map[string]chan struct{}{}}
	if err := s.loadAllowedIP(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// CreateInstance records a new Key Protect instance (called by the resource
// controller when a kms instance is provisioned). It also creates the
// instance's "default" key ring. Creating the same instance again is a
// no-op, so the controller may retry after a crash.
func (s *Service) CreateInstance(ctx context.Context, in Instance) error {
	const op = "kms.CreateInstance"
	if in.GUID == "" || in.AccountID == "" {
		return errs.E(op, errs.Invalid, "BAD_BODY_ERR", "An instance needs a GUID and an account")
	}
	if in.Region == "" {
		in.Region = "us-south"
	}
	if in.CRN == "" {
		in.CRN = crn.New("kms", in.Region, in.AccountID, in.GUID).String()
	}
	now := store.Time(s.clock.Now())
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		// ON CONFLICT rather than catching the uniqueness error: on
		// PostgreSQL a failed statement aborts the whole transaction, so
		// the lookup below could not run after it.
		res, err := tx.Exec(`INSERT INTO kms_instances (guid, crn, account_id, region, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (guid) DO NOTHING`,
			in.GUID, in.CRN, in.AccountID, in.Region, now)
		if err != nil {
			return errs.Internalf(op, err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return errs.Internalf(op, err)
		} else if n == 0 {
			var account string
			if err := tx.QueryRow(`SELECT account_id FROM kms_instances WHERE guid = ?`, in.GUID).Scan(&account); err == nil && account == in.AccountID {
				return errInstanceExists
			}
			return errs.E(op, errs.Conflict, "INSTANCE_EXISTS_ERR", "An instance with this GUID exists in another account")
		}
		_, err = tx.Exec(`INSERT INTO kms_key_rings (instance_guid, id, created_by, creation_date) VALUES (?, 'default', '', ?)`, in.GUID, now)
		tx.Changed(topicKeys, "")
		return err
	})
	s.hot.invalidate()
	if err == errInstanceExists {
		return nil
	}
	return err
}

// errInstanceExists rolls back a repeated CreateInstance, which then succeeds.
var errInstanceExists = errs.E("kms.CreateInstance", errs.Conflict, "INSTANCE_EXISTS_ERR", "The instance already exists")

// DeleteInstance removes an instance and everything in it (called by the
// resource controller once the instance's reclamation has ended). Key
// material goes with it: this is a cryptographic erasure of the instance.
func (s *Service) DeleteInstance(ctx context.Context, guid string) error {
	const op = "kms.DeleteInstance"
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		res, err := tx.Exec(`DELETE FROM kms_instances WHERE guid = ?`, guid)
		if err != nil {
			return errs.Internalf(op, err)
		}
		s.allowedIPChanged(ctx, tx, guid)
		tx.Changed(topicKeys, "")
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.E(op, errs.NotExist, "INSTANCE_NOT_FOUND_ERR", "The instance does not exist")
		}
		for _, q := range []string{
			`DELETE FROM kms_registrations WHERE instance_guid = ?`,
			`DELETE FROM kms_aliases WHERE instance_guid = ?`,
			`DELETE FROM kms_key_versions WHERE key_id IN (SELECT id FROM kms_keys WHERE instance_guid = ?)`,
			`DELETE FROM kms_key_policies WHERE key_id IN (SELECT id FROM kms_keys WHERE instance_guid = ?)`,
			`DELETE FROM kms_keys WHERE instance_guid = ?`,
			`DELETE FROM kms_key_rings WHERE instance_guid = ?`,
			`DELETE FROM kms_instance_policies WHERE instance_guid = ?`,
			`DELETE FROM kms_import_tokens WHERE instance_guid = ?`,
			`DELETE FROM kms_key_events WHERE instance_guid = ?`,
		} {
			if _, err := tx.Exec(q, guid); err != nil {
				return errs.Internalf(op, err)
			}
		}
		return nil
	})
	s.hot.invalidate()
	return err
}

// instance returns the instance named by guid if the caller may address it:
// it must exist and belong to the caller's account (a service principal acts
// across accounts through authorizations, which the authorizer checks), and
// a network call must come from an address the instance's allowedIP policy
// allows. Every call on an instance passes here, so none bypasses the policy.
func (s *Service) instance(ctx context.Context, op, guid string) (*auth.Principal, Instance, error) {
	p, in, err := s.addressable(ctx, op, guid)
	if err == nil {
		err = s.checkClientAddr(ctx, op, in.GUID)
	}
	return p, in, err
}

// addressable is instance without the allowedIP policy.
func (s *Service) addressable(ctx context.Context, op, guid string) (*auth.Principal, Instance, error) {
	p := auth.FromContext(ctx)
	if p == nil {
		return nil, Instance{}, errs.E(op, errs.Unauthenticated, "UNAUTHORIZED_ERR", "The user does not have access to the specified resource")
	}
	if guid == "" {
		return p, Instance{}, errs.E(op, errs.Invalid, "INVALID_HEADER_ERR", "The header 'bluemix-instance' must be: the GUID of a Key Protect instance").On("header", "bluemix-instance")
	}
	in, ok, err := s.findInstance(ctx, guid)
	if err != nil {
		return p, Instance{}, errs.Internalf(op, err)
	}
	if !ok || (p.Type != auth.Service && p.AccountID != in.AccountID) {
		return p, Instance{}, errs.E(op, errs.Unauthenticated, "UNAUTHORIZED_ERR", "The user does not have access to the specified resource")
	}
	return p, in, nil
}

// findInstance returns the instance guid from the cache or the database.
func (s *Service) findInstance(ctx context.Context, guid string) (Instance, bool, error) {
	if in, ok := s.hot.instance(guid); ok && s.trusted() {
		return in, true, nil
	}
	var in Instance
	gen := s.hot.generation()
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT guid, crn, account_id, region FROM kms_instances WHERE guid = ?`, guid).
			Scan(&in.GUID, &in.CRN, &in.AccountID, &in.Region)
	})
	if store.IsNoRows(err) {
		return Instance{}, false, nil
	}
	if err != nil {
		return Instance{}, false, err
	}
	s.hot.putInstance(gen, in)
	return in, true, nil
}

// authorize asks the authorizer, turning anything but a clear allow into a
// Key Protect 403.
func (s *Service) authorize(ctx context.Context, op string, p *auth.Principal, action string, in Instance, keyID string) error {
	r := auth.Resource{AccountID: in.AccountID, ServiceName: "kms", ServiceInstance: in.GUID}
	if keyID != "" {
		r.ResourceType, r.ResourceID = "key", keyID
	}
	if err := s.authz.Authorize(ctx, p, action, r); err != nil {
		e := errs.E(op, errs.Permission, "FORBIDDEN_ERR", "The user is not authorized to perform this action").Because(err)
		if ae := errs.As(err); ae != nil && ae.Kind == errs.Unauthenticated {
			e.Kind, e.Code = errs.Unauthenticated, "UNAUTHORIZED_ERR"
		}
		return e
	}
	return nil
}

func principalID(ctx context.Context) string {
	if p := auth.FromContext(ctx); p != nil {
		return p.IAMID
	}
	return "keyline-kms"
}

func timePtr(s string) *time.Time {
	if s == "" {
		return nil
	}
	t := store.ParseTime(s)
	return &t
}
