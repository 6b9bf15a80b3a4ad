package streams

import (
	"context"
	"fmt"
	"regexp"
	"strings"

	"github.com/google/uuid"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// Provision parameters.
const (
	ParamDiskKey   = "disk_encryption_key_crn"
	ParamBackupKey = "backup_encryption_key_crn"
)

// Backup keys must come from regions whose Key Protect backs Block Storage
// backups; of those, only some survive a region failure.
var (
	backupKeyRegions = map[string]bool{"us-south": true, "us-east": true, "eu-de": true}
	durableRegions   = map[string]bool{"us-south": true, "eu-de": true}
)

var bareKeyID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

// keyParam is a validated key parameter.
type keyParam struct {
	param string
	crn   string
	info  KeyInfo
}

// Provision creates a deployment: it checks the keys and the
// authorizations, wraps a fresh DEK, registers the deployment on its keys
// and starts its Kafka listener. It returns warnings for the caller to show.
func (s *Service) Provision(ctx context.Context, inst Instance, params map[string]any) ([]string, error) {
	const op = "streams.Provision"
	if inst.GUID == "" || inst.CRN == "" || inst.AccountID == "" {
		return nil, errs.E(op, errs.Invalid, "", "a deployment needs a GUID, a CRN and an account")
	}
	s.mu.Lock()
	existing := s.deployments[inst.GUID]
	s.mu.Unlock()
	if existing != nil {
		// The controller retries a create interrupted by a crash: the same
		// request succeeds again, a different one conflicts.
		rec, _, _ := existing.snapshot()
		if rec.CRN == inst.CRN && rec.DiskKeyCRN == paramString(params, ParamDiskKey) && rec.BackupKeyCRN == paramString(params, ParamBackupKey) {
			return nil, nil
		}
		return nil, errs.Ef(op, errs.Conflict, "DEPLOYMENT_EXISTS", "deployment %s is already provisioned with other settings", inst.GUID)
	}
	actx := asDeployment(ctx, inst.AccountID, inst.GUID, inst.CRN)
	disk, err := s.checkKeyParam(actx, inst, params, ParamDiskKey)
	if err != nil {
		return nil, err
	}
	backup, err := s.checkKeyParam(actx, inst, params, ParamBackupKey)
	if err != nil {
		return nil, err
	}
	restoreFrom, err := s.checkBackupParams(params)
	if err != nil {
		return nil, err
	}
	tokenOnly, err := iamTokenOnly(params)
	if err != nil {
		return nil, err
	}
	var warnings []string
	if backup != nil {
		if !backupKeyRegions[backup.info.Region] {
			return nil, errs.Ef(op, errs.Invalid, "BACKUP_KEY_REGION", "%s must be a key in us-south, us-east or eu-de (where backups can use your key); %s is in %s: create the key in a Key Protect instance of one of those regions",
				ParamBackupKey, backup.crn, backup.info.Region).On("field", ParamBackupKey)
		}
		if !durableRegions[backup.info.Region] {
			warnings = append(warnings, fmt.Sprintf("the backup key is in %s: only keys in us-south and eu-de survive a region failure, so backups may become unrestorable if %s fails", backup.info.Region, backup.info.Region))
		}
		var users []string
		if err := s.db.Read(ctx, func(tx *store.Tx) error {
			var err error
			users, err = backupKeyUsers(tx, backup.crn, inst.GUID)
			return err
		}); err != nil {
			return nil, errs.Internalf(op, err)
		}
		if len(users) > 0 {
			warnings = append(warnings, fmt.Sprintf("the backup key is already used by %d other deployment(s) (%s): deleting it or its authorizations shreds the backups of all of them", len(users), strings.Join(users, ", ")))
		}
	}

	rec := &record{GUID: inst.GUID, CRN: inst.CRN, AccountID: inst.AccountID, Name: inst.Name, Plan: inst.Plan,
		Region: inst.Region, CreatedAt: s.clock.Now()}
	rec.UpdatedAt = rec.CreatedAt
	if disk != nil {
		rec.DiskKeyCRN = disk.crn
	}
	if backup != nil {
		rec.BackupKeyCRN = backup.crn
	}
	dek := newDEK()
	rec.DEKID = dek.ID
	rec.WrappedDEK, rec.KeyVersion, err = s.wrapDEK(ctx, rec, dek)
	if err != nil {
		dek.Wipe()
		return nil, s.keyAccessError(op, ParamDiskKey, rec.DiskKeyCRN, err)
	}
	d := s.newDeployment(rec)
	if restoreFrom != "" {
		// The data comes first: a backup that cannot be read fails the
		// provisioning before anything else is made.
		// No deployment has this GUID (checked above), so data at its
		// directory is what a provisioning interrupted by a crash left.
		if err := removeData(d.dir); err != nil {
			dek.Wipe()
			return nil, errs.Internalf(op, err)
		}
		opts := seglog.Options{StoreID: inst.GUID, Keys: []*seglog.DEK{{ID: dek.ID, Key: append([]byte(nil), dek.Key...)}}, Sync: true, SegmentBytes: s.cfg.SegmentBytes}
		err := s.cfg.Restorer.RestoreBackup(ctx, inst, restoreFrom, d.dir, opts)
		wipeAll(opts.Keys...)
		if err != nil {
			dek.Wipe()
			return nil, err
		}
	}
	// undo removes the restored data of a provisioning that fails before
	// the deployment is served.
	undo := func(err error) ([]string, error) {
		dek.Wipe()
		removeData(d.dir)
		return nil, err
	}
	if backup != nil {
		// The deployment's backups live on block storage, which needs its
		// own authorization to the key, created by the deployment.
		if err := s.iam.CreateDependentAuthorization(ctx, servicePrincipal(inst.AccountID, inst.GUID, inst.CRN), "is", backupTarget(backup.crn), auth.RoleReader); err != nil {
			if errs.KindOf(err) == errs.Permission {
				return undo(errs.Ef(op, errs.Invalid, "S2S_DELEGATION_MISSING", "Missing or mis-configured S2S Authorization Policy. The service could not delegate access to the backup encryption key specified as %s to Block Storage: the messagehub -> kms authorization needs the Reader and AuthorizationDelegator roles; create it with `keyline iam authorization-policy-create messagehub kms Reader,AuthorizationDelegator --target-service-instance-id %s`",
					backup.crn, backup.info.InstanceGUID).On("field", ParamBackupKey))
			}
			return undo(errs.Internalf(op, err))
		}
	}
	registered, err := s.register(actx, rec, disk, backup)
	if err != nil {
		for _, k := range registered {
			s.keys.Unregister(actx, k, rec.CRN)
		}
		return undo(err)
	}
	s.mu.Lock()
	if _, dup := s.deployments[inst.GUID]; dup {
		s.mu.Unlock()
		dek.Wipe()
		return nil, errs.Ef(op, errs.Conflict, "DEPLOYMENT_EXISTS", "deployment %s is already provisioned", inst.GUID)
	}
	s.deployments[inst.GUID] = d
	s.mu.Unlock()
	fail := func(err error) ([]string, error) {
		s.stop(d)
		s.mu.Lock()
		delete(s.deployments, inst.GUID)
		s.mu.Unlock()
		for _, k := range registered {
			s.keys.Unregister(actx, k, rec.CRN)
		}
		removeData(d.dir)
		return nil, err
	}
	// The lease is taken before the row is there for other nodes to see,
	// so that this node leads the new deployment.
	if s.cl != nil && !s.tryLead(ctx, d) {
		dek.Wipe()
		return fail(errs.E(op, errs.Unavailable, "NO_LEASE", "the deployment's lease cannot be taken now: try again"))
	}
	if err := s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := insertRecord(tx, rec); err != nil {
			return err
		}
		return setIAMTokenOnlyTx(tx, rec.GUID, tokenOnly)
	}); err != nil {
		dek.Wipe()
		if store.IsUnique(err) {
			return fail(errs.Ef(op, errs.Conflict, "DEPLOYMENT_EXISTS", "deployment %s is already provisioned", inst.GUID))
		}
		return fail(errs.Internalf(op, err))
	}
	if err := s.listen(ctx, d); err != nil {
		dek.Wipe()
		s.db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.Exec(`DELETE FROM streams_deployments WHERE guid=?`, inst.GUID)
			return err
		})
		return fail(err)
	}
	if err := s.serveNew(d, dek); err != nil {
		s.db.Tx(ctx, func(tx *store.Tx) error {
			_, err := tx.Exec(`DELETE FROM streams_deployments WHERE guid=?`, inst.GUID)
			tx.Changed(DeploymentTopic, inst.GUID)
			return err
		})
		return fail(err)
	}
	if s.cl != nil {
		// Its log exists now: the other nodes start following it.
		s.db.Tx(ctx, func(tx *store.Tx) error { tx.Changed(DeploymentTopic, inst.GUID); return nil })
		s.runLease(d)
	}
	s.log.Info("deployment provisioned", "deployment", inst.GUID, "byok", rec.DiskKeyCRN != "")
	return warnings, nil
}

// serveNew opens a new deployment's log with its DEK and serves it.
func (s *Service) serveNew(d *deployment, dek *seglog.DEK) error {
	st, obj, storage, err := s.openLog(d, []*seglog.DEK{dek})
	if err != nil {
		dek.Wipe()
		return err
	}
	brk, done, err := s.startBroker(d, storage, "")
	if err != nil {
		s.closeLog(st, obj)
		dek.Wipe()
		return err
	}
	d.mu.Lock()
	d.st, d.obj, d.dek, d.brk, d.brkDone = st, obj, dek, brk, done
	d.mu.Unlock()
	return nil
}

// register registers the deployment on each of its keys with the key
// version it uses, returning the keys registered so far.
func (s *Service) register(actx context.Context, rec *record, disk, backup *keyParam) ([]string, error) {
	const op = "streams.register"
	var done []string
	for _, k := range []*keyParam{disk, backup} {
		if k == nil || (len(done) > 0 && done[0] == k.crn) {
			continue
		}
		version := k.info.Version
		if k == disk {
			version = rec.KeyVersion
		}
		if err := s.keys.Register(actx, k.crn, rec.CRN, version); err != nil {
			return done, s.keyAccessError(op, k.param, k.crn, err)
		}
		done = append(done, k.crn)
	}
	return done, nil
}

// checkKeyParam validates one key parameter; nil when it is absent.
func (s *Service) checkKeyParam(actx context.Context, inst Instance, params map[string]any, param string) (*keyParam, error) {
	const op = "streams.Provision"
	raw, ok := params[param]
	if !ok || raw == nil {
		return nil, nil
	}
	str, ok := raw.(string)
	if !ok {
		return nil, errs.Ef(op, errs.Invalid, "INVALID_KEY_CRN", "%s must be a string: the key's full CRN (crn:v1:...:key:<id>)", param).On("field", param)
	}
	str = strings.TrimSpace(str)
	if str == "" {
		return nil, nil
	}
	if !strings.HasPrefix(str, "crn:") && bareKeyID.MatchString(str) {
		return nil, errs.Ef(op, errs.Invalid, "KEY_CRN_REQUIRED", "%s must be the key's full CRN (crn:v1:...:key:<id>), not just its ID: copy it from the CRN column of `keyline kp keys -i <Key Protect instance>`, or from `keyline kp key show %s -i <Key Protect instance>`", param, str).On("field", param)
	}
	c, err := crn.Parse(str)
	if err != nil {
		return nil, errs.Ef(op, errs.Invalid, "INVALID_KEY_CRN", "%s is not a valid key CRN: %s; copy the key's CRN from the CRN column of `keyline kp keys -i <Key Protect instance>`", param, errMsg(err)).On("field", param)
	}
	if c.ServiceName != "kms" || c.ResourceType != "key" || c.Resource == "" || c.ServiceInstance == "" {
		return nil, errs.Ef(op, errs.Invalid, "INVALID_KEY_CRN", "%s must be the CRN of a Key Protect key (crn:v1:<cname>:<ctype>:kms:<region>:a/<account>:<instance>:key:<id>); %s is not one", param, str).On("field", param)
	}
	if c.Account() != inst.AccountID {
		return nil, errs.Ef(op, errs.Invalid, "KEY_OTHER_ACCOUNT", "%s %s belongs to account %s, not to the deployment's account %s: use a key of a Key Protect instance in account %s", param, str, c.Account(), inst.AccountID, inst.AccountID).On("field", param)
	}
	info, err := s.keys.KeyInfo(actx, str)
	if err != nil {
		return nil, s.keyAccessError(op, param, str, err)
	}
	switch {
	case info.Extractable:
		return nil, errs.Ef(op, errs.Invalid, "KEY_NOT_ROOT", "%s %s is a standard key, which cannot protect other keys: use a root key (create one with `keyline kp key create <name> -i %s` without --standard-key)", param, str, c.ServiceInstance).On("field", param)
	case info.State == KeyDestroyed:
		return nil, errs.Ef(op, errs.Invalid, "KEY_DELETED", "%s %s has been deleted: restore it within 30 days of deletion (`keyline kp key restore %s -i %s`) or use another root key", param, str, c.Resource, c.ServiceInstance).On("field", param)
	case info.State == KeySuspended:
		return nil, errs.Ef(op, errs.Invalid, "KEY_DISABLED", "%s %s is disabled: enable it with `keyline kp key enable %s -i %s` or use another root key", param, str, c.Resource, c.ServiceInstance).On("field", param)
	case info.State == KeyDeactivated:
		return nil, errs.Ef(op, errs.Invalid, "KEY_EXPIRED", "%s %s has expired and can no longer wrap keys: use another root key", param, str).On("field", param)
	case info.State != KeyActive:
		return nil, errs.Ef(op, errs.Invalid, "KEY_NOT_ACTIVE", "%s %s is not active: use an active root key", param, str).On("field", param)
	}
	if info.CRN == "" {
		info.CRN = str
	}
	if info.Region == "" {
		info.Region = c.Location
	}
	if info.InstanceGUID == "" {
		info.InstanceGUID = c.ServiceInstance
	}
	if info.AccountID == "" {
		info.AccountID = c.Account()
	}
	return &keyParam{param: param, crn: str, info: info}, nil
}

// keyAccessError turns a KMS failure on a key the caller named into a 400
// that says how to fix it.
func (s *Service) keyAccessError(op, param, keyCRN string, err error) error {
	switch errs.KindOf(err) {
	case errs.Permission, errs.Unauthenticated:
		inst := ""
		if c, perr := crn.Parse(keyCRN); perr == nil {
			inst = c.ServiceInstance
		}
		roles := "Reader"
		if param == ParamBackupKey {
			roles = "Reader,AuthorizationDelegator"
		}
		return errs.Ef(op, errs.Invalid, "S2S_AUTHORIZATION_MISSING", "Missing or mis-configured S2S Authorization Policy. The service could not configure access to the encryption key specified as %s: create one with `keyline iam authorization-policy-create messagehub kms %s --target-service-instance-id %s`",
			keyCRN, roles, inst).On("field", param)
	case errs.NotExist, errs.Gone:
		inst := "<Key Protect instance>"
		if c, perr := crn.Parse(keyCRN); perr == nil {
			inst = c.ServiceInstance
		}
		return errs.Ef(op, errs.Invalid, "KEY_NOT_FOUND", "%s %s does not exist: check the CRN with `keyline kp keys -i %s`", param, keyCRN, inst).On("field", param)
	case errs.Invalid, errs.Conflict, errs.Unprocessable:
		return errs.Ef(op, errs.Invalid, "KEY_UNUSABLE", "%s %s cannot be used: %s", param, keyCRN, errMsg(err)).On("field", param)
	case errs.Unavailable:
		return errs.E(op, errs.Unavailable, "KMS_UNAVAILABLE", "Key Protect cannot be reached now: try again").Because(err)
	}
	return errs.Internalf(op, err)
}

// checkBackupParams validates the backup parameters and returns the
// backup to restore ("" for none).
func (s *Service) checkBackupParams(params map[string]any) (string, error) {
	const op = "streams.Provision"
	if v, ok := params[ParamBackupSchedule]; ok && v != nil {
		if _, err := BackupScheduleHours(params); err != nil {
			return "", err
		}
	}
	raw, ok := params[ParamBackupID]
	if !ok || raw == nil {
		return "", nil
	}
	id, ok := raw.(string)
	if id = strings.TrimSpace(id); !ok || id == "" {
		return "", errs.Ef(op, errs.Invalid, "INVALID_BACKUP_ID", "%s must be the CRN of a backup: list them with `keyline resource backups DEPLOYMENT`", ParamBackupID).On("field", ParamBackupID)
	}
	if s.cfg.Restorer == nil {
		return "", errs.E(op, errs.Invalid, "RESTORE_UNAVAILABLE", "This Keyline cannot restore backups").On("field", ParamBackupID)
	}
	if s.cfg.ObjectStore != nil {
		return "", errs.E(op, errs.Invalid, "RESTORE_UNAVAILABLE", "Restoring a backup into a deployment on object storage is not supported yet").On("field", ParamBackupID)
	}
	return id, nil
}

// BackupScheduleHours is the hours between scheduled backups the
// parameters ask for: 24 (daily) when absent, 1 to 168 otherwise.
func BackupScheduleHours(params map[string]any) (int, error) {
	raw, ok := params[ParamBackupSchedule]
	if !ok || raw == nil {
		return 24, nil
	}
	var h float64
	switch v := raw.(type) {
	case float64:
		h = v
	case int:
		h = float64(v)
	default:
		h = -1
	}
	if h != float64(int(h)) || h < 1 || h > 168 {
		return 0, errs.Ef("streams.Provision", errs.Invalid, "INVALID_BACKUP_SCHEDULE", "%s must be a whole number of hours between scheduled backups, 1 to 168 (24 is daily)", ParamBackupSchedule).On("field", ParamBackupSchedule)
	}
	return int(h), nil
}

// paramString is a string parameter as Provision reads it ("" if absent).
func paramString(params map[string]any, name string) string {
	v, _ := params[name].(string)
	return strings.TrimSpace(v)
}

// backupTarget is what the block storage authorization of a backup key covers.
func backupTarget(keyCRN string) auth.Resource {
	c, _ := crn.Parse(keyCRN)
	return auth.Resource{AccountID: c.Account(), ServiceName: "kms", ServiceInstance: c.ServiceInstance, ResourceType: "key", ResourceID: c.Resource}
}

// EnsureDependentAuthorizations re-creates the block storage (is -> kms)
// authorization of every deployment with a backup key, so that deleting it
// does not stop backups; IAM keeps an identical authorization as it is.
// Wire it to IAM's authorization-deleted hook. It fails (and the
// authorization stays missing) when the customer removed the delegation too.
func (s *Service) EnsureDependentAuthorizations(ctx context.Context) error {
	s.mu.Lock()
	ds := make([]*deployment, 0, len(s.deployments))
	for _, d := range s.deployments {
		ds = append(ds, d)
	}
	s.mu.Unlock()
	var failed []string
	for _, d := range ds {
		rec, _, _ := d.snapshot()
		if rec.BackupKeyCRN == "" {
			continue
		}
		if err := s.iam.CreateDependentAuthorization(ctx, servicePrincipal(rec.AccountID, rec.GUID, rec.CRN), "is", backupTarget(rec.BackupKeyCRN), auth.RoleReader); err != nil {
			s.log.Warn("streams: cannot re-create the backup key's block storage authorization", "deployment", rec.GUID, "err", err)
			failed = append(failed, rec.CRN)
		}
	}
	if len(failed) > 0 {
		return errs.Ef("streams.EnsureDependentAuthorizations", errs.Permission, "S2S_DELEGATION_MISSING",
			"the block storage authorization of the backup key of %s cannot be re-created: the messagehub -> kms authorization with AuthorizationDelegator is missing, so their backups fail",
			strings.Join(failed, ", "))
	}
	return nil
}

func randomID() string { return uuid.NewString() }
