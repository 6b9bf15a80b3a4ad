package backup

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams"
)

// Audit actions (Event Streams' style).
const (
	ActionCreate  = "event-streams.backup.create"
	ActionRestore = "event-streams.backup.restore"
)

// Deployments is the data plane as backups use it (*streams.Service).
type Deployments interface {
	Deployment(ctx context.Context, guid string) (streams.DeploymentInfo, error)
	Deployments(ctx context.Context, accountID string) ([]streams.DeploymentInfo, error)
	// ReadLog runs f on the deployment's open log.
	ReadLog(ctx context.Context, guid string, f func(archive.Log) error) error
}

// Delegation re-creates a deployment's dependent authorizations
// (streams.Identity): before each backup with a backup key, the block
// storage (is -> kms) authorization is made again if the user deleted it
// while the delegation stands.
type Delegation interface {
	CreateDependentAuthorization(ctx context.Context, source *auth.Principal, dependentService string, target auth.Resource, role string) error
}

// Config configures the Service.
type Config struct {
	DB          *store.DB
	Audit       *audit.Log
	Clock       clock.Clock
	Logger      *slog.Logger
	Volumes     VolumeConfig
	Keys        streams.KeyService // the KMS; every call runs as the principal in ctx
	Delegation  Delegation
	Deployments Deployments
	Controller  *controller.Controller // instances (and their parameters) and tasks
	Authorizer  auth.Authorizer
	MasterKey   *seal.AEAD // seals backups of deployments without any key
	// ChunkSize of new backups (archive.DefaultChunkSize when 0).
	ChunkSize int
	// Retention is how long backups are kept (30 days when 0), as Cloud
	// Databases keeps them.
	Retention time.Duration
	// Concurrency is how many backups run at once (2 when 0); the others
	// wait their turn, so a schedule firing for many deployments does not
	// starve the brokers of CPU.
	Concurrency int
}

// Service takes, lists and restores deployment backups, on demand and on
// each deployment's schedule.
type Service struct {
	cfg   Config
	db    *store.DB
	audit *audit.Log
	clock clock.Clock
	log   *slog.Logger
	keys  streams.KeyService

	bg      context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	running map[string]bool // deployment GUIDs with a backup running
	slots   chan struct{}   // one per backup allowed to run at once
}

// New opens the backups' table. Backups a stopped process left running are
// taken again by the node that takes their tasks over (controller.Takeover);
// those without a running task are marked failed.
func New(ctx context.Context, cfg Config) (*Service, error) {
	const op = "backup.New"
	if cfg.DB == nil || cfg.Audit == nil || cfg.Keys == nil || cfg.Deployments == nil || cfg.Controller == nil ||
		cfg.Authorizer == nil || cfg.MasterKey == nil || cfg.Delegation == nil {
		return nil, errs.E(op, errs.Invalid, "", "backups need a database, an audit log, the KMS, IAM, the deployments, the controller and a master key")
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
	// A running backup whose task no longer runs (or that has none) will
	// not be taken over: it failed. The others are their tasks' business.
	now := cfg.Clock.Now()
	if err := cfg.DB.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`UPDATE backup_backups SET status = ?, reason = ?, finished_at = ? WHERE status = ?
			AND task_id NOT IN (SELECT crn FROM rc_tasks WHERE status IN (?, ?))`,
			StatusFailed, "The backup was interrupted by a restart of Keyline: take it again", store.Time(now), StatusRunning,
			controller.TaskQueued, controller.TaskRunning)
		return err
	}); err != nil {
		return nil, errs.Internalf(op, err)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 2
	}
	if cfg.Retention <= 0 {
		cfg.Retention = 30 * 24 * time.Hour
	}
	bg, stop := context.WithCancel(context.Background())
	s := &Service{cfg: cfg, db: cfg.DB, audit: cfg.Audit, clock: cfg.Clock, log: cfg.Logger, keys: cfg.Keys,
		bg: bg, stop: stop, running: map[string]bool{}, slots: make(chan struct{}, cfg.Concurrency)}
	// A backup whose process stopped is taken again from the start by the
	// node that takes its task over: its object was never committed.
	for _, description := range []string{descriptionOnDemand, descriptionScheduled} {
		cfg.Controller.Tasks().OnTakeover("backup", description, s.takeOver)
	}
	return s, nil
}

// Task descriptions of backups.
const (
	descriptionOnDemand  = "Creating an on-demand backup"
	descriptionScheduled = "Creating a scheduled backup"
)

// reserve marks a backup of deployment guid running, refusing a second one
// at once; release ends it.
func (s *Service) reserve(op, guid string) (release func(), err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bg.Err() != nil {
		return nil, errs.E(op, errs.Unavailable, "SHUTTING_DOWN", "Keyline is shutting down: take the backup after it restarts")
	}
	if s.running[guid] {
		return nil, errs.E(op, errs.Conflict, "BACKUP_IN_PROGRESS", "A backup of the deployment is already running: wait for its task to finish")
	}
	s.running[guid] = true
	s.wg.Add(1) // under mu: Close waits for every backup it did not refuse
	return func() {
		s.mu.Lock()
		delete(s.running, guid)
		s.mu.Unlock()
		s.wg.Done()
	}, nil
}

// takeOver takes again, under the same record and task, the backup whose
// task this process took over from a stopped one.
func (s *Service) takeOver(_ context.Context, task *controller.Task) {
	ctx := context.Background()
	var b *Backup
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		b, err = scanBackup(tx.QueryRow(`SELECT `+backupColumns+` FROM backup_backups WHERE task_id = ?`, task.CRN.String()))
		return err
	})
	switch {
	case store.IsNoRows(err):
		// Stopped before the backup was recorded: nothing was taken.
		task.Fail(ctx, "The backup was interrupted by a restart of Keyline before it started: take it again")
		return
	case err != nil:
		s.log.Error("backup: cannot read a backup to take over", "task", task.CRN.String(), "err", err)
		task.Fail(ctx, "The backup was interrupted by a restart of Keyline: take it again")
		return
	case b.Status == StatusCompleted:
		task.Complete(ctx) // stopped between recording the backup and its task
		return
	case b.Status != StatusRunning:
		task.Fail(ctx, b.Reason)
		return
	}
	release, err := s.reserve("backup.takeOver", b.DeploymentGUID)
	if err != nil {
		task.Fail(ctx, "The backup was interrupted by a restart of Keyline: take it again")
		return
	}
	s.log.Info("backup: taking again a backup interrupted on a stopped node", "backup", b.CRN)
	actx := auth.WithPrincipal(ctx, deploymentIdentity(b.AccountID, b.DeploymentGUID, b.DeploymentCRN))
	go func() {
		defer release()
		s.run(actx, b, task)
	}()
}

// Close cancels running backups (they fail, leaving no object) and waits
// for them.
func (s *Service) Close() {
	s.mu.Lock()
	s.stop()
	s.mu.Unlock()
	s.wg.Wait()
}

// deployment finds the messagehub instance id (GUID or CRN) for the caller,
// who must be allowed action on it.
func (s *Service) deployment(ctx context.Context, op, id, action string) (*controller.Instance, error) {
	inst, err := s.cfg.Controller.GetInstance(ctx, id)
	if err != nil {
		return nil, err
	}
	if inst.ServiceName != streams.ServiceName {
		return nil, errs.E(op, errs.NotExist, "DEPLOYMENT_NOT_FOUND", "The deployment could not be found: backups are taken of Event Streams (messagehub) instances")
	}
	if action != auth.InstanceRead {
		if err := s.cfg.Authorizer.Authorize(ctx, auth.FromContext(ctx), action, instanceResource(inst.AccountID, inst.GUID)); err != nil {
			return nil, err
		}
	}
	return inst, nil
}

func instanceResource(account, guid string) auth.Resource {
	return auth.Resource{AccountID: account, ServiceName: streams.ServiceName, ServiceInstance: guid}
}

// Create starts an on-demand backup of the deployment (GUID or CRN) and
// returns its task; the backup runs in the background.
func (s *Service) Create(ctx context.Context, deploymentID string) (*controller.Task, error) {
	const op = "backup.Create"
	inst, err := s.deployment(ctx, op, deploymentID, auth.InstanceUpdate)
	if err != nil {
		return nil, err
	}
	if inst.State != controller.StateActive && inst.State != controller.StateInactive {
		return nil, errs.Ef(op, errs.Conflict, "DEPLOYMENT_NOT_ACTIVE", "The deployment is %s: only an active deployment can be backed up", inst.State)
	}
	return s.start(ctx, inst, TypeOnDemand)
}

// start records a running backup and its task, and runs it. ctx is the
// request's (its principal and correlation id go into the audit event).
func (s *Service) start(ctx context.Context, inst *controller.Instance, typ string) (*controller.Task, error) {
	const op = "backup.start"
	dep, err := s.cfg.Deployments.Deployment(ctx, inst.GUID)
	if err != nil {
		return nil, err
	}
	release, err := s.reserve(op, inst.GUID)
	if err != nil {
		return nil, err
	}
	id := uuid.NewString()
	b := &Backup{ID: id, CRN: inst.CRN.Child("backup", id).String(), DeploymentGUID: inst.GUID, DeploymentCRN: inst.CRN.String(),
		DeploymentName: inst.Name, AccountID: inst.AccountID, Type: typ, Status: StatusRunning, Object: id + ".klbackup",
		CreatedAt: s.clock.Now().UTC()}
	switch {
	case dep.BackupEncryptionKeyCRN != "":
		b.KeyCRN, b.Key, b.SealedBy = dep.BackupEncryptionKeyCRN, dep.BackupKey, sealedByBackupKey
	case dep.DiskEncryptionKeyCRN != "":
		b.KeyCRN, b.Key, b.SealedBy = dep.DiskEncryptionKeyCRN, dep.DiskKey, sealedByDiskKey
	default:
		b.SealedBy = sealedByMaster
	}
	description := descriptionOnDemand
	if typ == TypeScheduled {
		description = descriptionScheduled
	}
	task, err := s.cfg.Controller.Tasks().Start(ctx, *inst, "backup", description)
	if err != nil {
		release()
		return nil, err
	}
	b.TaskID = task.CRN.String()
	if err := s.db.Tx(ctx, func(tx *store.Tx) error { return insertBackup(tx, b) }); err != nil {
		release()
		task.Fail(ctx, "The backup could not be recorded")
		return nil, errs.Internalf(op, err)
	}
	// The backup outlives the request; it keeps the request's principal
	// and correlation id for its audit event.
	actx := store.WithoutGuard(context.WithoutCancel(ctx))
	go func() {
		defer release()
		s.run(actx, b, task)
	}()
	return task, nil
}

// run takes backup b and records how it ended: in the backup, its task
// and the audit trail.
func (s *Service) run(actx context.Context, b *Backup, task *controller.Task) {
	ctx, cancel := context.WithCancel(s.bg)
	defer cancel()
	size, err := s.take(ctx, b, task)
	b.FinishedAt = s.clock.Now().UTC()
	code := http.StatusCreated
	if err == nil {
		b.Status, b.Size = StatusCompleted, size
	} else {
		b.Status = StatusFailed
		b.Reason, code = s.failureReason(b, err)
		s.log.Warn("backup failed", "backup", b.CRN, "err", err)
	}
	outcome := audit.Success
	if err != nil {
		outcome = audit.Failure
	}
	ev := audit.NewEvent(actx, ActionCreate, audit.Target{ID: b.CRN, Name: b.DeploymentName, TypeURI: "event-streams/backup"}, outcome, code)
	ev.RequestData = mergeData(ev.RequestData, map[string]any{"deploymentId": b.DeploymentCRN, "type": b.Type, "keyCRN": b.KeyCRN, "taskId": b.TaskID})
	if err == nil {
		ev.ResponseData = map[string]any{"backupId": b.CRN, "sizeBytes": b.Size}
	} else {
		ev.Reason.ReasonForFailure = b.Reason
		if ev.Severity == audit.Normal {
			// A backup that did not happen needs someone's attention,
			// whatever its status code (a deleted key is a 410).
			ev.Severity = audit.Warning
		}
	}
	fctx := context.WithoutCancel(ctx)
	if err := s.db.Tx(fctx, func(tx *store.Tx) error {
		if err := finishBackup(tx, b); err != nil {
			return err
		}
		return s.audit.Append(tx, ev)
	}); err != nil {
		s.log.Error("backup: cannot record the end of a backup", "backup", b.CRN, "err", err)
	}
	if b.Status == StatusCompleted {
		err = task.Complete(fctx)
	} else {
		err = task.Fail(fctx, b.Reason)
	}
	if err != nil {
		s.log.Warn("backup: cannot finish the task", "backup", b.CRN, "err", err)
	}
}

// take writes the backup to the deployment's volume and returns its size.
func (s *Service) take(ctx context.Context, b *Backup, task *controller.Task) (int64, error) {
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	case <-ctx.Done():
		return 0, errs.E("backup.take", errs.Unavailable, "SHUTTING_DOWN", "Keyline stopped before the backup could start; take it again").Because(ctx.Err())
	}
	vol, err := s.volume(ctx, b)
	if err != nil {
		return 0, err
	}
	last := 0
	progress := func(done, total int64) {
		pct := 99
		if total > 0 {
			pct = int(done * 99 / total)
		}
		if pct > last {
			last = pct
			if err := task.Progress(context.WithoutCancel(ctx), pct); err != nil {
				s.log.Warn("backup: task progress", "err", err)
			}
		}
	}
	opts := archive.WriterOptions{BackupID: b.ID, Created: b.CreatedAt, ChunkSize: s.cfg.ChunkSize}
	takeBackup := func() error {
		return s.cfg.Deployments.ReadLog(ctx, b.DeploymentGUID, func(st archive.Log) error {
			_, err := Take(ctx, st, vol, b.Object, s.rootKey(b), opts, progress)
			return err
		})
	}
	err = takeBackup()
	var ke rootKeyError
	if errors.As(err, &ke) && errs.KindOf(err) == errs.Permission && b.SealedBy == sealedByBackupKey && s.recreateDependent(ctx, b) {
		// Take leaves nothing behind when it fails, so it can run again.
		err = takeBackup()
	}
	if err != nil {
		return 0, err
	}
	info, err := vol.Stat(ctx, b.Object)
	if err != nil {
		return 0, err
	}
	return info.Size, nil
}

// volume opens the deployment's backup volume. The first backup makes it:
// block storage (is) creates it for the deployment, which the audit trail
// records once, with the key that protects what it holds.
func (s *Service) volume(ctx context.Context, b *Backup) (volume.Volume, error) {
	vol, err := OpenVolume(ctx, s.cfg.Volumes, b.DeploymentGUID)
	if err != nil {
		return nil, err
	}
	dep, err := crn.Parse(b.DeploymentCRN)
	if err != nil {
		return nil, errs.Internalf("backup.volume", err)
	}
	volCRN := crn.New(BlockStorage, dep.Location, b.AccountID, "").Child("volume", b.DeploymentGUID).String()
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		res, err := tx.Exec(`INSERT INTO backup_volumes (deployment_guid, crn, key_crn, created_at) VALUES (?,?,?,?) ON CONFLICT (deployment_guid) DO NOTHING`,
			b.DeploymentGUID, volCRN, b.KeyCRN, store.Time(s.clock.Now()))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		ictx := auth.WithPrincipal(ctx, blockStorage(b.AccountID, b.DeploymentGUID, b.DeploymentCRN))
		ev := audit.NewEvent(ictx, "is.volume.create", audit.Target{ID: volCRN, Name: b.DeploymentName + "-backups", TypeURI: "is/volume"}, audit.Success, http.StatusCreated)
		ev.RequestData = mergeData(ev.RequestData, map[string]any{"deploymentId": b.DeploymentCRN, "encryptionKeyCRN": b.KeyCRN})
		return s.audit.Append(tx, ev)
	})
	if err != nil {
		return nil, errs.Internalf("backup.volume", err)
	}
	return vol, nil
}

// recreateDependent is the reconciler's second chance, for a block
// storage authorization that is missing when a backup needs it (the user
// deleted it and the delegation, then gave the delegation back): it makes
// it again as the deployment, which IAM allows only while the delegation
// stands. It reports whether the authorization exists now.
func (s *Service) recreateDependent(ctx context.Context, b *Backup) bool {
	err := s.cfg.Delegation.CreateDependentAuthorization(ctx, deploymentIdentity(b.AccountID, b.DeploymentGUID, b.DeploymentCRN),
		BlockStorage, keyResource(b.Key), auth.RoleReader)
	if err != nil {
		s.log.Info("backup: the block storage authorization cannot be re-created", "deployment", b.DeploymentGUID, "err", err)
		return false
	}
	return true
}

// failureReason says why a backup failed and how to fix it, with the
// status code of its audit event.
func (s *Service) failureReason(b *Backup, err error) (string, int) {
	if reason, code, ok := keyFailure(b, "The backup", err); ok {
		return reason, code
	}
	e := errs.As(err)
	switch {
	case e != nil && e.Code == "DEPLOYMENT_LOCKED":
		return "The backup failed: the deployment's data cannot be read now (" + e.Msg + "). Fix: make its disk key usable again, then take the backup again", 409
	case e != nil && e.Code == "BACKUP_SOURCE_CHANGED":
		return "The backup failed: " + e.Msg, 409
	case e != nil && e.Kind == errs.Unavailable:
		return "The backup failed: " + e.Msg + ". Fix: try again later", 503
	case e != nil && e.Kind != errs.Internal && e.Kind != errs.Other:
		return "The backup failed: " + e.Msg, e.Kind.Status()
	}
	return "The backup failed: an internal error occurred. Fix: try again; if it fails again, check the server log", 500
}

// keyResource is what a key's authorization covers.
func keyResource(key crn.KeyRef) auth.Resource {
	return auth.Resource{AccountID: key.Account, ServiceName: "kms", ServiceInstance: key.Instance, ResourceType: "key", ResourceID: key.ID}
}

func mergeData(a, b map[string]any) map[string]any {
	if a == nil {
		return b
	}
	for k, v := range b {
		a[k] = v
	}
	return a
}

// List returns the deployment's backups, newest first, for a caller who
// may read it, each with whether it can be restored now.
func (s *Service) List(ctx context.Context, deploymentID string) ([]View, error) {
	const op = "backup.List"
	inst, err := s.deployment(ctx, op, deploymentID, auth.InstanceRead)
	if err != nil {
		return nil, err
	}
	var bs []Backup
	if err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		bs, err = backupsOf(tx, inst.GUID)
		return err
	}); err != nil {
		return nil, errs.Internalf(op, err)
	}
	usable := map[string]bool{}
	out := make([]View, 0, len(bs))
	for i := range bs {
		out = append(out, s.view(ctx, &bs[i], usable))
	}
	return out, nil
}

// Get returns one backup (by CRN or id) for a caller who may read its
// deployment.
func (s *Service) Get(ctx context.Context, id string) (View, error) {
	const op = "backup.Get"
	b, err := s.load(ctx, op, id)
	if err != nil {
		return View{}, err
	}
	if _, err := s.deployment(ctx, op, b.DeploymentGUID, auth.InstanceRead); err != nil {
		if errs.KindOf(err) == errs.NotExist || errs.KindOf(err) == errs.Permission {
			return View{}, errNoBackup(op)
		}
		return View{}, err
	}
	return s.view(ctx, b, map[string]bool{}), nil
}

func (s *Service) load(ctx context.Context, op, id string) (*Backup, error) {
	var b *Backup
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		b, err = backupByID(tx, op, id)
		return err
	})
	return b, err
}

// View is a backup as the API shows it.
type View struct {
	Backup
	Restorable bool
}

// view adds whether b can be restored now: it completed and its key can
// still unwrap (a deleted key shreds it; a disabled one or a missing
// authorization stops it until fixed). usable caches keys per call.
func (s *Service) view(ctx context.Context, b *Backup, usable map[string]bool) View {
	v := View{Backup: *b}
	if b.Status != StatusCompleted {
		return v
	}
	if b.SealedBy == sealedByMaster {
		v.Restorable = true
		return v
	}
	cacheKey := b.SealedBy + "\x00" + b.DeploymentGUID + "\x00" + b.KeyCRN
	ok, seen := usable[cacheKey]
	if !seen {
		p := blockStorage(b.AccountID, b.DeploymentGUID, b.DeploymentCRN)
		if b.SealedBy == sealedByDiskKey {
			p = deploymentIdentity(b.AccountID, b.DeploymentGUID, b.DeploymentCRN)
		}
		info, err := s.keys.KeyInfo(auth.WithPrincipal(ctx, p), b.Key)
		ok = err == nil && !info.Purged && (info.State == streams.KeyActive || info.State == streams.KeyDeactivated)
		usable[cacheKey] = ok
	}
	v.Restorable = ok
	return v
}
