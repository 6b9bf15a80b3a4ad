package streams

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/connhold"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/broker"
	"github.com/keyline/keyline/internal/streams/objlog"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// Why a deployment is locked.
const (
	causeDisabled    = "disabled"
	causeDeleted     = "deleted"
	causePurged      = "purged"
	causeRevoked     = "revoked"
	causeUnreachable = "unreachable"
	causeDamaged     = "damaged" // the log does not open: no retry helps
)

// deployment is a deployment at run time: its row, its Kafka socket and,
// while unlocked, its open log and plain DEK.
type deployment struct {
	svc                *Service
	dir                string
	guid, crn, account string // never change

	// op serializes what changes the data plane: key events, suspend,
	// resume, reclaim. A re-encryption holds it while producers carry on.
	op opLock

	mu        sync.Mutex
	rec       *record
	front     *front // nil while suspended
	brk       *broker.Broker
	brkDone   chan struct{}
	st        *seglog.Store
	obj       *objlog.Store // instead of st when the data is on object storage
	dek       *seglog.DEK   // the log's sealing key
	oldDEK    *seglog.DEK   // the key a running re-encryption replaces
	reenc     *reencryption // nil unless re-encrypting
	lock      string        // the reason logins are refused; "" when serving
	lockCause string

	// In a cluster (cluster.go): the deployment's lease, whether this node
	// leads it, and a follower's read-only view instead of st or obj.
	lease       *cluster.Lease
	leader      bool
	view        *objlog.View
	stopLeaseFn context.CancelFunc
	leaseDone   chan struct{}
}

func (s *Service) newDeployment(rec *record) *deployment {
	d := &deployment{svc: s, dir: s.deploymentDir(rec.GUID), guid: rec.GUID, crn: rec.CRN, account: rec.AccountID, rec: rec,
		op: opLock{semaphore.NewWeighted(1)}}
	d.lease = s.newLease(d)
	return d
}

// opLock is a mutex whose waiter can give up (lockWithin).
type opLock struct{ w *semaphore.Weighted }

func (l opLock) Lock()         { l.w.Acquire(context.Background(), 1) }
func (l opLock) Unlock()       { l.w.Release(1) }
func (l opLock) TryLock() bool { return l.w.TryAcquire(1) }

// lockWithin locks within wait, or reports false.
func (l opLock) lockWithin(ctx context.Context, wait time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	return l.w.Acquire(ctx, 1) == nil
}

func (d *deployment) snapshot() (record, string, string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return *d.rec, d.lock, d.lockCause
}

func (d *deployment) ctx(ctx context.Context) context.Context {
	return asDeployment(ctx, d.account, d.guid, d.crn)
}

// aad binds a wrapped DEK to its deployment and its own ID.
func (d *deployment) aad(dekID string) []string { return []string{d.crn, dekID} }

// listen opens the Kafka socket, on the deployment's port if it is still
// free, otherwise on a new one that is then kept.
func (s *Service) listen(ctx context.Context, d *deployment) error {
	const op = "streams.listen"
	d.mu.Lock()
	port := d.rec.Port
	d.mu.Unlock()
	if s.cl != nil {
		// Each node has its own port for the deployment.
		port = s.endpointPort(ctx, d.guid)
	}
	var ln net.Listener
	var err error
	if port != 0 {
		ln, err = connhold.Listen("tcp", net.JoinHostPort(s.cfg.ListenHost, strconv.Itoa(port)))
	}
	if ln == nil && s.cfg.PortMin == 0 {
		ln, err = connhold.Listen("tcp", net.JoinHostPort(s.cfg.ListenHost, "0"))
	}
	for p := s.cfg.PortMin; ln == nil && p != 0 && p <= s.cfg.PortMax; p++ {
		if p == port || s.portTaken(p) {
			continue
		}
		ln, err = connhold.Listen("tcp", net.JoinHostPort(s.cfg.ListenHost, strconv.Itoa(p)))
	}
	if ln == nil {
		if err == nil {
			err = errors.New("port range exhausted")
		}
		return errs.E(op, errs.Unavailable, "NO_KAFKA_PORT", "No port is free for the deployment's Kafka listener: widen the Kafka port range").Because(err)
	}
	newPort := ln.Addr().(*net.TCPAddr).Port
	if s.cl != nil {
		if err := s.saveEndpoint(ctx, d.guid, newPort); err != nil {
			ln.Close()
			return errs.Internalf(op, err)
		}
		// Kept in memory only (portTaken): the row's port is no node's.
		d.mu.Lock()
		d.rec.Port = newPort
		d.mu.Unlock()
	} else if newPort != port {
		d.mu.Lock()
		d.rec.Port = newPort
		d.rec.UpdatedAt = s.clock.Now()
		rec := *d.rec
		d.mu.Unlock()
		if err := s.db.Tx(ctx, func(tx *store.Tx) error { return updateRecord(tx, &rec) }); err != nil {
			ln.Close()
			return errs.Internalf(op, err)
		}
	}
	d.mu.Lock()
	d.front = newFront(ln, s.log.With("deployment", d.guid))
	d.mu.Unlock()
	return nil
}

func (s *Service) portTaken(p int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.deployments {
		d.mu.Lock()
		taken := d.rec.Port == p && d.front != nil
		d.mu.Unlock()
		if taken {
			return true
		}
	}
	return false
}

// unwrapDEK unwraps a stored DEK: through the KMS as the deployment, or
// with the master key for a service-managed one. A DEK the KMS rewraps
// with a newer key version is stored again.
func (s *Service) unwrapDEK(ctx context.Context, d *deployment, id string, wrapped []byte) (*seglog.DEK, error) {
	d.mu.Lock()
	key := d.rec.DiskKey
	aad := d.aad(id)
	d.mu.Unlock()
	if key.IsZero() {
		plain, err := s.cfg.MasterKey.Open(wrapped, []byte(aad[0]+"\x00"+aad[1]))
		if err != nil {
			return nil, errs.E("streams.unwrapDEK", errs.Internal, "DEK_UNWRAP_FAILED", "The deployment's service-managed key does not open with the master key").Because(err)
		}
		return &seglog.DEK{ID: id, Key: plain}, nil
	}
	plain, rewrapped, version, err := s.keys.Unwrap(d.ctx(ctx), key, wrapped, aad)
	if err != nil {
		return nil, err
	}
	if len(rewrapped) > 0 {
		d.mu.Lock()
		if d.rec.DEKID == id {
			d.rec.WrappedDEK, d.rec.KeyVersion = rewrapped, version
		} else if d.rec.NextDEKID == id {
			d.rec.NextWrappedDEK, d.rec.NextKeyVersion = rewrapped, version
		}
		d.rec.UpdatedAt = s.clock.Now()
		rec := *d.rec
		d.mu.Unlock()
		if err := s.db.Tx(ctx, func(tx *store.Tx) error { return updateRecord(tx, &rec) }); err != nil {
			s.log.Warn("streams: could not store a rewrapped DEK; the old one still unwraps", "deployment", rec.GUID, "err", err)
		}
	}
	return &seglog.DEK{ID: id, Key: plain}, nil
}

// wrapDEK wraps a new DEK for the deployment.
func (s *Service) wrapDEK(ctx context.Context, rec *record, dek *seglog.DEK) (wrapped []byte, version string, err error) {
	aad := []string{rec.CRN, dek.ID}
	if rec.DiskKeyCRN == "" {
		return s.cfg.MasterKey.Seal(dek.Key, []byte(aad[0]+"\x00"+aad[1])), "", nil
	}
	return s.keys.Wrap(asDeployment(ctx, rec.AccountID, rec.GUID, rec.CRN), rec.DiskKey, dek.Key, aad)
}

// unlock unwraps the DEK (and the next one during a re-encryption), opens
// the log and serves it. On failure it says why the deployment stays
// locked.
func (s *Service) unlock(ctx context.Context, d *deployment) (cause, reason string, err error) {
	rec, _, _ := d.snapshot()
	var keys []*seglog.DEK
	wipe := func() { wipeAll(keys...) }
	if rec.NextDEKID != "" {
		next, err := s.unwrapDEK(ctx, d, rec.NextDEKID, rec.NextWrappedDEK)
		if err != nil {
			cause, reason := s.lockReason(ctx, d, err)
			return cause, reason, err
		}
		keys = append(keys, next)
	}
	cur, err := s.unwrapDEK(ctx, d, rec.DEKID, rec.WrappedDEK)
	if err != nil {
		wipe()
		cause, reason := s.lockReason(ctx, d, err)
		return cause, reason, err
	}
	keys = append(keys, cur)
	st, obj, view, storage, err := s.openData(d, keys)
	if err != nil {
		wipe()
		if errs.KindOf(err) == errs.NotExist {
			// A follower before the leader created the log.
			return causeUnreachable, "the deployment is starting: its log is not created yet", err
		}
		return causeDamaged, "the deployment is locked: its data cannot be opened (" + errMsg(err) + ")", err
	}
	brk, done, err := s.startBroker(d, storage, "")
	if err != nil {
		s.closeLog(st, obj)
		wipe()
		return causeUnreachable, "the deployment is locked: its Kafka listener cannot start", err
	}
	d.mu.Lock()
	oldBrk, oldDone, oldKey := d.brk, d.brkDone, d.dek
	d.brk, d.brkDone, d.st, d.obj, d.view, d.dek, d.lock, d.lockCause = brk, done, st, obj, view, keys[0], "", ""
	d.mu.Unlock()
	stopBroker(oldBrk, oldDone)
	if oldKey != nil && oldKey != keys[0] {
		// A follower's key, unwrapped again by the new leader.
		oldKey.Wipe()
	}
	if len(keys) > 1 {
		s.resume(d, keys[1])
	}
	return "", "", nil
}

// lockData closes every Kafka connection, refuses new logins with reason,
// closes the log and wipes the plain DEK from memory.
func (s *Service) lockData(d *deployment, cause, reason string) {
	s.cancelReencryption(d)
	d.mu.Lock()
	if d.lock != "" && d.st == nil && d.obj == nil {
		d.lock, d.lockCause = reason, cause
		brk := d.brk
		d.mu.Unlock()
		if brk != nil {
			brk.Lock(reason)
		}
		return
	}
	oldBrk, oldDone, st, obj, dek, oldDEK := d.brk, d.brkDone, d.st, d.obj, d.dek, d.oldDEK
	d.brk, d.brkDone, d.st, d.obj, d.view, d.dek, d.oldDEK, d.lock, d.lockCause = nil, nil, nil, nil, nil, nil, nil, reason, cause
	front := d.front
	d.mu.Unlock()
	if oldBrk != nil {
		oldBrk.Lock(reason)
	}
	if front != nil {
		if brk, done, err := s.startBroker(d, lockedStorage{reason}, reason); err == nil {
			d.mu.Lock()
			d.brk, d.brkDone = brk, done
			d.mu.Unlock()
		} else {
			s.log.Error("streams: cannot start the locked listener", "deployment", d.guid, "err", err)
		}
	}
	stopBroker(oldBrk, oldDone)
	s.closeLog(st, obj)
	wipeAll(dek, oldDEK)
}

// cancelReencryption stops a running re-encryption and waits for it; the
// next DEK stays stored, so it resumes when the deployment unlocks.
func (s *Service) cancelReencryption(d *deployment) {
	d.mu.Lock()
	r := d.reenc
	d.mu.Unlock()
	if r != nil {
		r.cancel()
		<-r.done
	}
}

func wipeAll(deks ...*seglog.DEK) {
	for _, k := range deks {
		if k != nil {
			k.Wipe()
		}
	}
}

// startBroker serves a broker over storage on the deployment's socket,
// locked from the start when reason is set.
func (s *Service) startBroker(d *deployment, storage broker.Storage, reason string) (*broker.Broker, chan struct{}, error) {
	d.mu.Lock()
	f, guid, account, plan, crn := d.front, d.guid, d.account, d.rec.Plan, d.crn
	d.mu.Unlock()
	if f == nil {
		return nil, nil, nil
	}
	h := newHandoff(f.ln.Addr(), f.gate)
	var nodeID int32
	if s.cl != nil {
		nodeID = s.cl.brokerID
	}
	brk, err := broker.New(broker.Config{NodeID: nodeID, Placement: s.placementOf(d), Follower: reason == "" && s.following(d), Listener: h, Storage: storage, ClusterID: guid, AdvertisedHost: s.cfg.AdvertisedHost,
		TLS: s.cfg.TLS, Reauthorize: s.cfg.Reauthorize, MaxPreAuthConnections: s.cfg.MaxPreAuthConnections, MaxPreAuthPerIP: s.cfg.MaxPreAuthPerIP,
		LoginTimeout: s.cfg.LoginTimeout, Login: s.kafkaLogin(guid, account), Audit: s.changeRecorder(crn), Logger: s.log.With("deployment", guid), Clock: s.clock,
		FetchMemory: s.cfg.DeploymentFetchMemory, SharedFetchMemory: s.fetchMem,
		RequestMemory: s.cfg.DeploymentRequestMemory, SharedRequestMemory: s.requestMem, Limits: PlanLimits(plan), AllocateProducerID: s.producerIDs(guid)})
	if err != nil {
		return nil, nil, err
	}
	if reason != "" {
		brk.Lock(reason)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := brk.Serve(context.Background()); err != nil {
			s.log.Warn("streams: Kafka listener stopped", "deployment", guid, "err", err)
		}
	}()
	f.attach(h)
	return brk, done, nil
}

func stopBroker(b *broker.Broker, done chan struct{}) {
	if b == nil {
		return
	}
	b.Close()
	if done != nil {
		<-done
	}
}

// stop closes the socket, the broker and the log, and wipes the DEK: for
// suspension, reclamation and shutdown.
func (s *Service) stop(d *deployment) { s.closeData(d, true) }

// closeData closes the broker and the log, and the socket too with
// socket, and wipes the DEK.
func (s *Service) closeData(d *deployment, socket bool) {
	s.cancelReencryption(d)
	d.mu.Lock()
	f, brk, done, st, obj, dek, oldDEK := d.front, d.brk, d.brkDone, d.st, d.obj, d.dek, d.oldDEK
	if !socket {
		f = nil
	} else {
		d.front = nil
	}
	d.brk, d.brkDone, d.st, d.obj, d.view, d.dek, d.oldDEK = nil, nil, nil, nil, nil, nil, nil
	d.mu.Unlock()
	if f != nil {
		f.close()
	}
	stopBroker(brk, done)
	s.closeLog(st, obj)
	wipeAll(dek, oldDEK)
}

// lockReason explains, from the key's state, why the DEK did not unwrap.
func (s *Service) lockReason(ctx context.Context, d *deployment, cause error) (string, string) {
	rec, _, _ := d.snapshot()
	if rec.DiskKeyCRN == "" {
		return causeUnreachable, "the deployment is locked: its service-managed key does not open"
	}
	info, err := s.keys.KeyInfo(d.ctx(ctx), rec.DiskKey)
	key := rec.DiskKeyCRN
	switch {
	case (err != nil && errs.KindOf(err) == errs.NotExist) || (err == nil && info.Purged):
		return causePurged, fmt.Sprintf("the deployment is locked: its key %s was deleted and purged, so its data can never be read again", key)
	case err != nil && errs.KindOf(err) == errs.Permission, err == nil && errs.KindOf(cause) == errs.Permission:
		return causeRevoked, fmt.Sprintf("the deployment is locked: it is no longer authorized to use its key %s; restore the messagehub -> kms Reader authorization", key)
	case err != nil:
		return causeUnreachable, fmt.Sprintf("the deployment is locked: its key %s cannot be reached now (%s)", key, errMsg(err))
	case info.State == KeyDestroyed:
		return causeDeleted, deletedReason(key)
	case info.State == KeySuspended:
		return causeDisabled, disabledReason(key)
	}
	return causeUnreachable, fmt.Sprintf("the deployment is locked: its key %s did not unwrap the data key (%s)", key, errMsg(cause))
}

// disabledReason and deletedReason say why a deployment is locked, in the
// words a Kafka client and the console show.
func disabledReason(key string) string {
	return fmt.Sprintf("the deployment is locked: its key %s is disabled; enable the key to unlock it", key)
}

func deletedReason(key string) string {
	return fmt.Sprintf("the deployment is locked and disabled: its key %s was deleted; its data stays unreadable unless the key is restored within 30 days", key)
}

// errMsg is the caller-safe message of an error.
func errMsg(err error) string {
	if e := errs.As(err); e != nil {
		return e.Msg
	}
	return "unexpected error"
}

// levelAccess pairs the IAM action that proves an access level with it.
type levelAccess struct {
	action string
	access broker.Access
}

// accessLevels are tried from the highest down.
var accessLevels = []levelAccess{{auth.TopicManage, broker.Manager}, {auth.MessageWrite, broker.Writer}, {auth.MessageRead, broker.Reader}}

// lockedStorage backs a locked deployment's listener: it holds nothing, so
// a locked broker cannot leak or change any data even by mistake.
type lockedStorage struct{ reason string }

func (l lockedStorage) err() error {
	return errs.E("streams.locked", errs.Conflict, "DEPLOYMENT_LOCKED", l.reason)
}

func (lockedStorage) GetMeta(string) ([]byte, bool)                         { return nil, false }
func (l lockedStorage) PutMeta(string, []byte) error                        { return l.err() }
func (l lockedStorage) DeleteMeta(string) error                             { return l.err() }
func (lockedStorage) ListMeta(string) map[string][]byte                     { return nil }
func (l lockedStorage) DropPartition(string) error                          { return l.err() }
func (l lockedStorage) Partition(string, bool) (broker.PartitionLog, error) { return nil, l.err() }

// newDEK makes a fresh 256-bit data encryption key.
func newDEK() *seglog.DEK {
	return &seglog.DEK{ID: "dek-" + randomID(), Key: seal.RandomKey()}
}

func (s *Service) deploymentDir(guid string) string {
	return filepath.Join(s.cfg.DataDir, "deployments", guid)
}

func removeData(dir string) error { return os.RemoveAll(dir) }
