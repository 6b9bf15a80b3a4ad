package streams

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/broker"
)

// Instance states as the resource controller shows them.
const (
	StateActive    = "active"
	StateInactive  = "inactive"
	StateSuspended = "suspended" // deleted, pending reclamation
)

// Start brings up every deployment and starts reacting to key events,
// including those raised while Keyline was down. A deployment whose key is
// disabled, deleted or unreachable stays locked and says why; it does not
// stop the others.
func (s *Service) Start(ctx context.Context) error {
	const op = "streams.Start"
	var recs []*record
	if err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		recs, err = listRecords(tx)
		return err
	}); err != nil {
		return errs.Internalf(op, err)
	}
	for _, rec := range recs {
		d := s.newDeployment(rec)
		s.mu.Lock()
		s.deployments[rec.GUID] = d
		s.mu.Unlock()
		if s.cl != nil {
			s.startDeployment(ctx, d)
			continue
		}
		if rec.Suspended {
			continue
		}
		if err := s.listen(ctx, d); err != nil {
			s.log.Error("streams: deployment has no Kafka listener", "deployment", rec.GUID, "err", err)
		}
		d.op.Lock()
		s.bringUp(ctx, d)
		d.op.Unlock()
	}
	if s.cl != nil {
		// Other nodes' changes to deployments.
		syncCtx, cancel := context.WithCancel(context.Background())
		s.cl.stopSync = cancel
		s.cl.synced.Add(1)
		go func() {
			defer s.cl.synced.Done()
			s.runSync(syncCtx)
		}()
	}
	if s.cfg.LeasedEvents && s.cl == nil {
		return nil
	}
	loopCtx, cancel := context.WithCancel(context.Background())
	s.mu.Lock()
	s.stopLoop = cancel
	s.mu.Unlock()
	s.loop.Add(1)
	go func() {
		defer s.loop.Done()
		s.runEvents(loopCtx)
	}()
	return nil
}

// bringUp unlocks d, or locks it with the reason and tells the controller.
// The caller holds d.op.
func (s *Service) bringUp(ctx context.Context, d *deployment) {
	if reason := s.elsewhere(d); reason != "" {
		s.lockData(d, causeElsewhere, reason)
		return
	}
	if s.following(d) {
		// A follower applies the lock its leader decided from the key.
		if l := s.followerLock(ctx, d.guid); l.cause != "" {
			s.lockData(d, l.cause, l.reason)
			return
		}
	}
	cause, reason, err := s.unlock(ctx, d)
	if err == nil {
		return
	}
	s.log.Warn("streams: deployment stays locked", "deployment", d.guid, "cause", cause, "err", err)
	s.lockData(d, cause, reason)
	if !s.leading(d) {
		return // the leader says how the instance fares
	}
	if err := s.states.SetState(ctx, d.guid, StateInactive, reason); err != nil {
		s.log.Warn("streams: cannot set the instance state", "deployment", d.guid, "err", err)
	}
}

// Close stops the event loop and every deployment, wiping their DEKs.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	stop := s.stopLoop
	ds := make([]*deployment, 0, len(s.deployments))
	for _, d := range s.deployments {
		ds = append(ds, d)
	}
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.loop.Wait()
	if s.cl != nil {
		if s.cl.stopSync != nil {
			s.cl.stopSync()
		}
		s.cl.synced.Wait()
	}
	for _, d := range ds {
		d.op.Lock()
		s.stop(d)
		d.op.Unlock()
	}
	// The leases go once nothing writes under them, so that the next
	// leaders take over at once.
	for _, d := range ds {
		s.stopLease(d)
	}
	return nil
}

func (s *Service) get(op, guid string) (*deployment, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.deployments[guid]
	if d == nil {
		return nil, errs.Ef(op, errs.NotExist, "DEPLOYMENT_NOT_FOUND", "no Event Streams deployment %s", guid)
	}
	return d, nil
}

// Suspend stops a deleted deployment's Kafka listener while it waits for
// reclamation; its data and key registrations stay.
func (s *Service) Suspend(ctx context.Context, guid string) error {
	return s.setSuspended(ctx, "streams.Suspend", guid, true)
}

// Resume starts a restored deployment again.
func (s *Service) Resume(ctx context.Context, guid string) error {
	return s.setSuspended(ctx, "streams.Resume", guid, false)
}

func (s *Service) setSuspended(ctx context.Context, op, guid string, suspended bool) error {
	d, err := s.get(op, guid)
	if err != nil {
		return err
	}
	d.op.Lock()
	defer d.op.Unlock()
	d.mu.Lock()
	if d.rec.Suspended == suspended {
		d.mu.Unlock()
		return nil
	}
	d.rec.Suspended = suspended
	d.rec.UpdatedAt = s.clock.Now()
	rec := *d.rec
	d.mu.Unlock()
	if err := s.db.Tx(ctx, func(tx *store.Tx) error { return updateRecord(tx, &rec) }); err != nil {
		return errs.Internalf(op, err)
	}
	if suspended {
		s.stop(d)
		d.mu.Lock()
		d.lock, d.lockCause = "", ""
		d.mu.Unlock()
		return nil
	}
	if err := s.listen(ctx, d); err != nil {
		return err
	}
	s.bringUp(ctx, d)
	// The restored instance is in the condition the deployment is in now,
	// whichever it was in when deleted.
	if _, lock, _ := d.snapshot(); lock == "" {
		if err := s.states.SetState(ctx, d.guid, StateActive, ""); err != nil {
			s.log.Warn("streams: cannot set the instance state", "deployment", d.guid, "err", err)
		}
	}
	return nil
}

// Reclaim erases a deployment for good: its data directory, then its
// registration on each key, then its row. If the KMS refuses to remove a
// registration, the row stays so that reclaiming again finishes the job.
func (s *Service) Reclaim(ctx context.Context, guid string) error {
	const op = "streams.Reclaim"
	d, err := s.get(op, guid)
	if err != nil {
		return err
	}
	if s.cl != nil {
		// Nobody leads an erased deployment; a failed reclamation leaves
		// it without a leader until it is reclaimed again or a node starts.
		s.stopLease(d)
	}
	d.op.Lock()
	defer d.op.Unlock()
	s.stop(d)
	if err := removeData(d.dir); err != nil {
		return errs.Internalf(op, err)
	}
	if err := s.destroyObjects(ctx, guid); err != nil {
		return err
	}
	rec, _, _ := d.snapshot()
	actx := d.ctx(ctx)
	seen := map[string]bool{}
	for _, k := range []string{rec.DiskKeyCRN, rec.BackupKeyCRN} {
		if k == "" || seen[k] {
			continue
		}
		seen[k] = true
		if err := s.keys.Unregister(actx, k, rec.CRN); err != nil && errs.KindOf(err) != errs.NotExist {
			return errs.Ef(op, errs.KindOf(err), "UNREGISTER_FAILED", "the deployment's data is erased but its registration on key %s could not be removed (%s): keep the messagehub -> kms authorization and reclaim again", k, errMsg(err)).Because(err)
		}
	}
	if err := s.db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`DELETE FROM streams_deployments WHERE guid=?`, guid); err != nil {
			return err
		}
		return eraseClusterRows(tx, guid)
	}); err != nil {
		return errs.Internalf(op, err)
	}
	s.mu.Lock()
	delete(s.deployments, guid)
	s.mu.Unlock()
	return nil
}

// Credentials makes service credentials for a deployment in Event Streams'
// shape: a new service ID (named serviceID, so that whoever revokes them
// finds it again) with an API key named name and role on the deployment.
func (s *Service) Credentials(ctx context.Context, guid, serviceID, name, role string) (map[string]any, error) {
	const op = "streams.Credentials"
	d, err := s.get(op, guid)
	if err != nil {
		return nil, err
	}
	rec, _, _ := d.snapshot()
	if role == "" {
		role = auth.RoleManager
	}
	apikey, iamID, err := s.iam.CreateServiceCredentials(ctx, rec.AccountID, guid, serviceID, name, role)
	if err != nil {
		return nil, err
	}
	brokers := s.brokerAddrs(rec)
	admin := s.adminURL(guid)
	return map[string]any{
		"kafka_brokers_sasl": brokers,
		"kafka_admin_url":    admin,
		"kafka_http_url":     admin,
		"user":               "token",
		"api_key":            apikey,
		"password":           apikey,
		"instance_id":        guid,
		"iam_serviceid_crn":  iamID,
		"iam_role_crn":       role,
		"iam_apikey_name":    name,
	}, nil
}

// CredentialsRevoked has the deployment's broker check every live Kafka
// connection's login now rather than at its next periodic sweep: called once
// a deployment's credentials are deleted in IAM, it cuts the connections
// they opened. Nothing to do for a deployment that is gone or not serving.
func (s *Service) CredentialsRevoked(guid string) {
	d := s.find(guid)
	if d == nil {
		return
	}
	d.mu.Lock()
	brk := d.brk
	d.mu.Unlock()
	if brk != nil {
		brk.Reauthorize()
	}
}

func (s *Service) brokerAddrs(rec record) []string {
	if s.cl != nil {
		return s.clusterAddrs(rec.GUID)
	}
	if rec.Port == 0 {
		return []string{}
	}
	return []string{net.JoinHostPort(s.cfg.AdvertisedHost, strconv.Itoa(rec.Port))}
}

func (s *Service) adminURL(guid string) string { return s.cfg.AdminURL + "/messagehub/" + guid }

// DeploymentInfo is a deployment's metadata and security settings, readable
// even when its key is deleted.
type DeploymentInfo struct {
	GUID                   string            `json:"id"`
	CRN                    string            `json:"crn"`
	AccountID              string            `json:"account_id"`
	Name                   string            `json:"name"`
	Plan                   string            `json:"plan"`
	PlanLimits             broker.PlanLimits `json:"plan_limits"`
	Region                 string            `json:"region"`
	DiskEncryptionKeyCRN   string            `json:"disk_encryption_key_crn,omitempty"`
	BackupEncryptionKeyCRN string            `json:"backup_encryption_key_crn,omitempty"`
	KeyVersion             string            `json:"key_version,omitempty"`
	State                  string            `json:"state"`
	Reason                 string            `json:"state_reason,omitempty"`
	KafkaBrokers           []string          `json:"kafka_brokers_sasl"`
	KafkaAdminURL          string            `json:"kafka_admin_url"`
	Reencrypting           bool              `json:"reencrypting"`
	CreatedAt              time.Time         `json:"created_at"`
	UpdatedAt              time.Time         `json:"updated_at"`

	// KafkaListener and KafkaConnections say how the Kafka socket fares;
	// absent while the deployment is suspended.
	KafkaListener    *ListenerHealth          `json:"kafka_listener,omitempty"`
	KafkaConnections *broker.ConnectionCounts `json:"kafka_connections,omitempty"`
}

// Deployment returns a deployment's metadata.
func (s *Service) Deployment(ctx context.Context, guid string) (DeploymentInfo, error) {
	d, err := s.get("streams.Deployment", guid)
	if err != nil {
		return DeploymentInfo{}, err
	}
	rec, lock, _ := d.snapshot()
	info := DeploymentInfo{GUID: rec.GUID, CRN: rec.CRN, AccountID: rec.AccountID, Name: rec.Name, Plan: rec.Plan, PlanLimits: PlanLimits(rec.Plan),
		Region: rec.Region, DiskEncryptionKeyCRN: rec.DiskKeyCRN, BackupEncryptionKeyCRN: rec.BackupKeyCRN,
		KeyVersion: rec.KeyVersion, State: StateActive, Reason: lock, KafkaBrokers: s.brokerAddrs(rec),
		KafkaAdminURL: s.adminURL(guid), Reencrypting: rec.NextDEKID != "", CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt}
	d.mu.Lock()
	f, brk := d.front, d.brk
	d.mu.Unlock()
	if f != nil {
		h := f.status()
		info.KafkaListener = &h
	}
	if brk != nil {
		n := brk.Connections()
		info.KafkaConnections = &n
	}
	switch {
	case rec.Suspended:
		info.State = StateSuspended
	case lock != "":
		info.State = StateInactive
	}
	return info, nil
}

// Deployments lists the deployments of an account ("" for all).
func (s *Service) Deployments(ctx context.Context, accountID string) ([]DeploymentInfo, error) {
	s.mu.Lock()
	guids := make([]string, 0, len(s.deployments))
	for g, d := range s.deployments {
		if accountID == "" || d.account == accountID {
			guids = append(guids, g)
		}
	}
	s.mu.Unlock()
	out := make([]DeploymentInfo, 0, len(guids))
	for _, g := range guids {
		if info, err := s.Deployment(ctx, g); err == nil {
			out = append(out, info)
		}
	}
	return out, nil
}

// accessFor is what p may do on a deployment's data.
func (s *Service) accessFor(ctx context.Context, p *auth.Principal, guid, account string) (levelAccess, error) {
	res := auth.Resource{AccountID: account, ServiceName: ServiceName, ServiceInstance: guid}
	for _, lv := range accessLevels {
		err := s.iam.Authorize(ctx, p, lv.action, res)
		if err == nil {
			return lv, nil
		}
		if errs.KindOf(err) != errs.Permission {
			return levelAccess{}, err
		}
	}
	return levelAccess{}, errs.E("streams.access", errs.Permission, "", fmt.Sprintf("the caller has no Reader, Writer or Manager role on Event Streams instance %s", guid))
}
