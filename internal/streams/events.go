package streams

import (
	"context"
	"errors"
	"fmt"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// Audit actions of a deployment's storage key (Event Streams' names).
const (
	actionStorageKeyUpdate = "event-streams.storage-key.update" // rotated: the data is under the new key
	actionStorageKeyRead   = "event-streams.storage-key.read"   // success: access restored; failure: withdrawn
)

// TaskSyncingKMSState is the description of a rotation's task.
const TaskSyncingKMSState = "Syncing KMS state"

// reencryption is a running re-encryption of a deployment's log under a
// fresh DEK; producers and consumers carry on meanwhile.
type reencryption struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// RunEvents is the key-event loop of a Service configured with
// LeasedEvents: it runs until ctx ends.
func (s *Service) RunEvents(ctx context.Context) error {
	if s.cl != nil {
		// In a cluster every node runs the loop for the deployments it
		// leads (Start does).
		return nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	// Close stops it before the deployments, as it does Start's loop.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.stopLoop = cancel
	s.loop.Add(1)
	s.mu.Unlock()
	defer s.loop.Done()
	s.runEvents(ctx)
	return nil
}

// runEvents handles pending key events at once, then whenever the KMS
// signals new ones (and every PollInterval in case a signal was missed).
func (s *Service) runEvents(ctx context.Context) {
	notes := s.keys.Notifications()
	for {
		s.handlePending(ctx)
		s.retryLocked(ctx)
		select {
		case <-ctx.Done():
			return
		case <-notes:
		case <-s.events:
		case <-s.clock.After(s.cfg.PollInterval):
		}
	}
}

// handlePending handles each pending event; a failed one stays pending
// and is tried again on the next round.
func (s *Service) handlePending(ctx context.Context) {
	sctx := auth.WithPrincipal(ctx, &auth.Principal{Type: auth.Service, ServiceName: ServiceName, Name: ServiceName,
		IAMID: "crn-" + ServiceName, CredentialType: "s2s-authorization"})
	evs, err := s.keys.PendingEvents(sctx)
	if err != nil {
		s.log.Warn("streams: cannot list key events", "err", err)
		return
	}
	// Deployments too busy for an event this round get no later ones
	// either, so that each deployment sees its key's events in order.
	busy := map[string]bool{}
	for _, ev := range evs {
		if ctx.Err() != nil {
			return
		}
		if err := s.handleEvent(ctx, ev, busy); err != nil {
			s.log.Warn("streams: key event not handled yet", "event", ev.ID, "action", ev.Action, "err", err)
		}
	}
}

// retryLocked tries again to unlock deployments locked for a reason no key
// event will clear: the KMS was unreachable, or the authorization was
// revoked and may be back.
func (s *Service) retryLocked(ctx context.Context) {
	s.mu.Lock()
	var ds []*deployment
	for _, d := range s.deployments {
		d.mu.Lock()
		if !d.rec.Suspended && (d.lockCause == causeUnreachable || d.lockCause == causeRevoked) {
			ds = append(ds, d)
		}
		d.mu.Unlock()
	}
	s.mu.Unlock()
	for _, d := range ds {
		if ctx.Err() != nil || !d.op.TryLock() {
			continue
		}
		if _, lock, _ := d.snapshot(); lock != "" {
			s.bringUp(ctx, d)
			if _, lock, _ := d.snapshot(); lock == "" && s.leading(d) {
				if err := s.states.SetState(ctx, d.guid, StateActive, ""); err != nil {
					s.log.Warn("streams: cannot set the instance state", "deployment", d.guid, "err", err)
				}
			}
		}
		d.op.Unlock()
	}
}

func (s *Service) deploymentByCRN(resourceCRN string) *deployment {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.deployments {
		if d.crn == resourceCRN {
			return d
		}
	}
	return nil
}

// handleEvent applies one key event to every deployment it concerns, then
// acknowledges it. If one deployment fails, the event stays pending and is
// applied again (each step is idempotent).
func (s *Service) handleEvent(ctx context.Context, ev KeyEvent, busy map[string]bool) error {
	if ev.CorrelationID != "" {
		ctx = httpapi.WithCorrelationID(ctx, ev.CorrelationID)
	}
	for _, rc := range ev.ResourceCRNs {
		if busy[rc] {
			return fmt.Errorf("deployment %s: %w", rc, errBusy)
		}
	}
	// In a cluster each deployment's leader applies the event to it; the
	// leader that finds every other deployment done acknowledges it.
	mine, others, handle := s.eventTurn(ev)
	if !handle && len(others) > 0 {
		return nil
	}
	var ackCtx context.Context
	version := ev.KeyVersion
	for _, rc := range ev.ResourceCRNs {
		d := s.deploymentByCRN(rc)
		if d == nil {
			continue // reclaimed meanwhile: nothing uses the key any more
		}
		if !mine[rc] {
			continue
		}
		if ackCtx == nil {
			ackCtx = d.ctx(ctx)
		}
		if len(others) > 0 && s.eventActed(ctx, ev.ID, d.guid) {
			continue
		}
		v, err := s.applyEvent(ctx, d, ev)
		if errors.Is(err, errBusy) {
			busy[rc] = true
		}
		if err != nil {
			return fmt.Errorf("deployment %s: %w", rc, err)
		}
		if v != "" {
			version = v
		}
		if len(others) > 0 {
			if err := s.recordActed(ctx, ev.ID, d.guid); err != nil {
				return fmt.Errorf("deployment %s: %w", rc, err)
			}
		}
	}
	for _, g := range others {
		if !s.eventActed(ctx, ev.ID, g) {
			return nil // its leader acknowledges the event once done
		}
	}
	if ackCtx == nil {
		ackCtx = auth.WithPrincipal(ctx, &auth.Principal{Type: auth.Service, ServiceName: ServiceName, Name: ServiceName,
			IAMID: "crn-" + ServiceName, CredentialType: "s2s-authorization"})
	}
	if ev.Action == ActionDisable || ev.Action == ActionDelete {
		version = ""
	}
	return s.keys.AckEvent(ackCtx, ev, adopterStateFor(ev.Action), version)
}

// errBusy leaves an event pending: a deployment it concerns was busy with
// another operation for longer than Config.EventWait.
var errBusy = errors.New("the deployment is busy with another operation; the event stays pending")

// applyEvent applies ev to d and returns the key version d now uses.
func (s *Service) applyEvent(ctx context.Context, d *deployment, ev KeyEvent) (string, error) {
	if !d.op.lockWithin(ctx, s.cfg.EventWait) {
		return "", errBusy
	}
	defer d.op.Unlock()
	rec, _, _ := d.snapshot()
	if ev.KeyCRN != rec.DiskKeyCRN {
		// The backup key guards the backups, not the running deployment:
		// keep the registration's version current.
		if ev.Action == ActionRotate && ev.KeyVersion != "" {
			return ev.KeyVersion, s.keys.UpdateRegistration(d.ctx(ctx), ev.KeyCRN, rec.CRN, ev.KeyVersion)
		}
		return ev.KeyVersion, nil
	}
	switch ev.Action {
	case ActionRotate:
		return s.rotate(ctx, d, ev)
	case ActionDisable, ActionDelete:
		return "", s.lockForKey(ctx, d, ev)
	case ActionEnable, ActionRestore:
		return s.unlockForKey(ctx, d, ev)
	}
	s.log.Warn("streams: unknown key event", "action", ev.Action)
	return rec.KeyVersion, nil
}

func adopterStateFor(action string) string {
	switch action {
	case ActionDisable:
		return DEKDisabled
	case ActionDelete:
		return DEKDestroyed
	}
	return DEKEnabled
}

// lockForKey locks the deployment because its key was disabled or deleted.
// The caller holds d.op.
func (s *Service) lockForKey(ctx context.Context, d *deployment, ev KeyEvent) error {
	rec, _, _ := d.snapshot()
	cause, reason := causeDisabled, disabledReason(rec.DiskKeyCRN)
	state := DEKDisabled
	if ev.Action == ActionDelete {
		cause, reason = causeDeleted, deletedReason(rec.DiskKeyCRN)
		state = DEKDestroyed
	}
	if !rec.Suspended {
		s.lockData(d, cause, reason)
	} else {
		d.mu.Lock()
		d.lock, d.lockCause = reason, cause
		d.mu.Unlock()
	}
	// The other nodes lock their listeners with the same reason.
	if err := s.storeLock(ctx, rec.GUID, cause, reason); err != nil {
		return err
	}
	if err := s.states.SetState(ctx, rec.GUID, StateInactive, reason); err != nil {
		s.log.Warn("streams: cannot set the instance state", "deployment", rec.GUID, "err", err)
	}
	actx := d.ctx(ctx)
	ae := audit.NewEvent(actx, actionStorageKeyRead, storageKeyTarget(rec), audit.Failure, 403)
	ae.Reason.ReasonForFailure = reason
	ae.RequestData = mergeData(ae.RequestData, map[string]any{"keyCRN": rec.DiskKeyCRN, "eventType": ev.Action, "eventId": ev.ID})
	ae.ResponseData = map[string]any{"adopterKeyState": state}
	return s.audit.Record(actx, ae)
}

// unlockForKey unlocks the deployment after its key was enabled or
// restored. The caller holds d.op.
func (s *Service) unlockForKey(ctx context.Context, d *deployment, ev KeyEvent) (string, error) {
	rec, lock, _ := d.snapshot()
	actx := d.ctx(ctx)
	if lock != "" && !rec.Suspended {
		if cause, reason, err := s.unlock(ctx, d); err != nil {
			s.lockData(d, cause, reason)
			return "", err
		}
	} else if rec.Suspended {
		d.mu.Lock()
		d.lock, d.lockCause = "", ""
		d.mu.Unlock()
	}
	if err := s.storeLock(ctx, rec.GUID, "", ""); err != nil {
		return "", err
	}
	if err := s.states.SetState(ctx, rec.GUID, StateActive, ""); err != nil {
		s.log.Warn("streams: cannot set the instance state", "deployment", rec.GUID, "err", err)
	}
	rec, _, _ = d.snapshot()
	ae := audit.NewEvent(actx, actionStorageKeyRead, storageKeyTarget(rec), audit.Success, 200)
	ae.RequestData = mergeData(ae.RequestData, map[string]any{"keyCRN": rec.DiskKeyCRN, "eventType": ev.Action, "eventId": ev.ID})
	ae.ResponseData = map[string]any{"adopterKeyState": DEKEnabled, "keyVersion": rec.KeyVersion}
	return rec.KeyVersion, s.audit.Record(actx, ae)
}

// rotate rewraps the deployment's wrapped DEKs with the key's new version
// (which is what Key Protect waits for before the acknowledgement), then
// re-encrypts the whole log under a fresh DEK in the background, in a
// "Syncing KMS state" task. The caller holds d.op.
func (s *Service) rotate(ctx context.Context, d *deployment, ev KeyEvent) (string, error) {
	const op = "streams.rotate"
	rec, _, _ := d.snapshot()
	actx := d.ctx(ctx)
	rewrapped, version, err := s.keys.Rewrap(actx, rec.DiskKeyCRN, rec.WrappedDEK, d.aad(rec.DEKID))
	if err != nil {
		return "", err
	}
	rec.WrappedDEK, rec.KeyVersion = rewrapped, version
	if rec.NextDEKID != "" {
		if rec.NextWrappedDEK, rec.NextKeyVersion, err = s.keys.Rewrap(actx, rec.DiskKeyCRN, rec.NextWrappedDEK, d.aad(rec.NextDEKID)); err != nil {
			return "", err
		}
	}
	rec.UpdatedAt = s.clock.Now()
	if err := s.saveRecord(ctx, d, &rec, nil); err != nil {
		return "", errs.Internalf(op, err)
	}
	if err := s.keys.UpdateRegistration(actx, rec.DiskKeyCRN, rec.CRN, version); err != nil {
		return "", err
	}
	d.mu.Lock()
	st, obj, cur, old, running := d.st, d.obj, d.dek, d.oldDEK, d.reenc != nil
	d.mu.Unlock()
	if obj != nil {
		return version, s.skipReencryption(actx, rec, ev.ID)
	}
	if running {
		// The running re-encryption's fresh DEK is rewrapped above.
		return version, nil
	}
	if st == nil {
		// Locked or suspended: the DEK is rewrapped; its data is re-encrypted
		// at the next rotation that finds it open.
		return version, s.recordKeyUpdate(actx, rec, ev.ID)
	}
	task, err := s.tasks.Start(actx, rec.CRN, TaskSyncingKMSState)
	if err != nil {
		return "", err
	}
	if rec.NextDEKID != "" {
		// A re-encryption failed earlier: its fresh DEK already seals new
		// blocks, so finish with it rather than add a third key.
		s.startReencryption(d, st, cur, old, task)
		return version, nil
	}
	next := newDEK()
	wrapped, nextVersion, err := s.wrapDEK(ctx, &rec, next)
	if err != nil {
		next.Wipe()
		task.Fail(actx, "the new data key could not be wrapped: "+errMsg(err))
		return "", err
	}
	rec.NextDEKID, rec.NextWrappedDEK, rec.NextKeyVersion = next.ID, wrapped, nextVersion
	rec.UpdatedAt = s.clock.Now()
	// The next DEK is stored before any block is sealed with it, so that a
	// re-encryption interrupted by a crash resumes after a restart.
	if err := s.saveRecord(ctx, d, &rec, nil); err != nil {
		next.Wipe()
		task.Fail(actx, "the new data key could not be stored")
		return "", errs.Internalf(op, err)
	}
	s.startReencryption(d, st, next, cur, task)
	return version, nil
}

// recordKeyUpdate records that the deployment uses the key's new version.
func (s *Service) recordKeyUpdate(ctx context.Context, rec record, eventID string) error {
	return s.audit.Record(ctx, keyUpdateEvent(ctx, rec, eventID))
}

func keyUpdateEvent(ctx context.Context, rec record, eventID string) *audit.Event {
	ae := audit.NewEvent(ctx, actionStorageKeyUpdate, storageKeyTarget(rec), audit.Success, 200)
	ae.RequestData = mergeData(ae.RequestData, map[string]any{"keyCRN": rec.DiskKeyCRN, "eventType": ActionRotate})
	if eventID != "" {
		ae.RequestData["eventId"] = eventID
	}
	ae.ResponseData = map[string]any{"adopterKeyState": DEKEnabled, "keyVersion": rec.KeyVersion}
	return ae
}

// resume finishes a re-encryption interrupted by a restart or a lock.
func (s *Service) resume(d *deployment, old *seglog.DEK) {
	d.mu.Lock()
	st, next, rec := d.st, d.dek, *d.rec
	d.mu.Unlock()
	actx := asDeployment(context.Background(), rec.AccountID, rec.GUID, rec.CRN)
	task, err := s.tasks.Start(actx, rec.CRN, TaskSyncingKMSState)
	if err != nil {
		s.log.Warn("streams: cannot start the resumed re-encryption's task", "deployment", rec.GUID, "err", err)
		task = nil
	}
	s.startReencryption(d, st, next, old, task)
}

// startReencryption makes next the log's sealing key and rewrites the rest
// under it in the background.
func (s *Service) startReencryption(d *deployment, st *seglog.Store, next, old *seglog.DEK, task Task) {
	rctx, cancel := context.WithCancel(context.Background())
	r := &reencryption{cancel: cancel, done: make(chan struct{})}
	d.mu.Lock()
	d.reenc, d.dek, d.oldDEK = r, next, old
	rec := *d.rec
	d.mu.Unlock()
	actx := asDeployment(rctx, rec.AccountID, rec.GUID, rec.CRN)
	go func() {
		defer close(r.done)
		defer cancel()
		last := -1
		err := st.ReencryptTo(rctx, next, func(done, total int64) {
			pct := 100
			if total > 0 {
				pct = int(done * 100 / total)
			}
			// The task reaches 100 only when the old DEK is gone.
			if pct >= 100 {
				pct = 99
			}
			if task != nil && pct != last {
				last = pct
				if err := task.Progress(actx, pct); err != nil {
					s.log.Warn("streams: task progress", "err", err)
				}
			}
		})
		if err == nil {
			err = s.finishReencryption(context.WithoutCancel(actx), d, task)
		}
		if err != nil {
			// Both DEKs stay stored (and in memory while unlocked): the
			// re-encryption resumes when the deployment is unlocked or
			// restarted, or at the next rotation.
			s.log.Warn("streams: re-encryption interrupted", "deployment", rec.GUID, "err", err)
			if task != nil {
				task.Fail(context.WithoutCancel(actx), "re-encryption interrupted ("+errMsg(err)+"); it resumes when the deployment runs again")
			}
			d.mu.Lock()
			d.reenc = nil
			d.mu.Unlock()
		}
	}()
}

// finishReencryption makes the next DEK the deployment's only DEK, deletes
// the old wrapped DEK and wipes the old plain one.
func (s *Service) finishReencryption(ctx context.Context, d *deployment, task Task) error {
	d.mu.Lock()
	rec := *d.rec
	d.mu.Unlock()
	rec.DEKID, rec.WrappedDEK, rec.KeyVersion = rec.NextDEKID, rec.NextWrappedDEK, rec.NextKeyVersion
	rec.NextDEKID, rec.NextWrappedDEK, rec.NextKeyVersion = "", nil, ""
	rec.UpdatedAt = s.clock.Now()
	if err := s.saveRecord(ctx, d, &rec, keyUpdateEvent(ctx, rec, "")); err != nil {
		return errs.Internalf("streams.finishReencryption", err)
	}
	d.mu.Lock()
	old := d.oldDEK
	d.oldDEK, d.reenc = nil, nil
	d.mu.Unlock()
	if old != nil {
		old.Wipe()
	}
	if task != nil {
		if err := task.Complete(ctx); err != nil {
			s.log.Warn("streams: task completion", "err", err)
		}
	}
	return nil
}

// saveRecord stores rec (with ae in the same transaction) and makes it the
// deployment's row in memory.
func (s *Service) saveRecord(ctx context.Context, d *deployment, rec *record, ae *audit.Event) error {
	if err := s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := updateRecord(tx, rec); err != nil {
			return err
		}
		if ae != nil {
			return s.audit.Append(tx, ae)
		}
		return nil
	}); err != nil {
		return err
	}
	d.mu.Lock()
	cp := *rec
	d.rec = &cp
	d.mu.Unlock()
	return nil
}

func storageKeyTarget(rec record) audit.Target {
	return audit.Target{ID: rec.CRN, Name: rec.Name, TypeURI: "event-streams/storage-key"}
}

func mergeData(base, more map[string]any) map[string]any {
	if base == nil {
		base = map[string]any{}
	}
	for k, v := range more {
		base[k] = v
	}
	return base
}
