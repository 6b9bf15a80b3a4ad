package streams

import (
	"context"
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
	event  *KeyEvent // the rotation to acknowledge when done, if any
}

// runEvents handles pending key events at once, then whenever the KMS
// signals new ones (and every PollInterval in case a signal was missed).
func (s *Service) runEvents(ctx context.Context) {
	notes := s.keys.Notifications()
	for {
		s.handlePending(ctx)
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
	for _, ev := range evs {
		if ctx.Err() != nil {
			return
		}
		if err := s.handleEvent(ctx, ev); err != nil {
			s.log.Warn("streams: key event not handled yet", "event", ev.ID, "action", ev.Action, "err", err)
		}
	}
}

func (s *Service) deploymentByCRN(resourceCRN string) *deployment {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.deployments {
		if d.rec.CRN == resourceCRN {
			return d
		}
	}
	return nil
}

// handleEvent applies one key event to the deployment it concerns.
func (s *Service) handleEvent(ctx context.Context, ev KeyEvent) error {
	if ev.CorrelationID != "" {
		ctx = httpapi.WithCorrelationID(ctx, ev.CorrelationID)
	}
	d := s.deploymentByCRN(ev.ResourceCRN)
	if d == nil {
		// Reclaimed meanwhile: nothing uses the key any more.
		return s.keys.AckEvent(auth.WithPrincipal(ctx, &auth.Principal{Type: auth.Service, ServiceName: ServiceName,
			Name: ServiceName, IAMID: "crn-" + ev.ResourceCRN, SourceCRN: ev.ResourceCRN, CredentialType: "s2s-authorization"}),
			ev, adopterStateFor(ev.Action), ev.KeyVersion)
	}
	d.op.Lock()
	defer d.op.Unlock()
	actx := d.ctx(ctx)
	rec, _, _ := d.snapshot()
	if ev.KeyCRN != rec.DiskKeyCRN {
		// The backup key guards the backups, not the running deployment:
		// keep the registration's version current and acknowledge.
		if ev.Action == ActionRotate && ev.KeyVersion != "" {
			if err := s.keys.UpdateRegistration(actx, ev.KeyCRN, rec.CRN, ev.KeyVersion); err != nil {
				return err
			}
		}
		return s.keys.AckEvent(actx, ev, adopterStateFor(ev.Action), ev.KeyVersion)
	}
	switch ev.Action {
	case ActionRotate:
		return s.rotate(ctx, d, ev)
	case ActionDisable, ActionDelete:
		return s.lockForKey(ctx, d, ev)
	case ActionEnable, ActionRestore:
		return s.unlockForKey(ctx, d, ev)
	}
	s.log.Warn("streams: unknown key event acknowledged", "action", ev.Action)
	return s.keys.AckEvent(actx, ev, DEKEnabled, rec.KeyVersion)
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
	cause, reason := causeDisabled, fmt.Sprintf("the deployment is locked: its key %s is disabled; enable the key to unlock it", rec.DiskKeyCRN)
	state := DEKDisabled
	if ev.Action == ActionDelete {
		cause, reason = causeDeleted, fmt.Sprintf("the deployment is locked: its key %s was deleted; its data stays unreadable unless the key is restored within 30 days", rec.DiskKeyCRN)
		state = DEKDestroyed
	}
	if !rec.Suspended {
		s.lockData(d, cause, reason)
	} else {
		d.mu.Lock()
		d.lock, d.lockCause = reason, cause
		d.mu.Unlock()
	}
	if err := s.states.SetState(ctx, rec.GUID, StateInactive, reason); err != nil {
		s.log.Warn("streams: cannot set the instance state", "deployment", rec.GUID, "err", err)
	}
	actx := d.ctx(ctx)
	ae := audit.NewEvent(actx, actionStorageKeyRead, storageKeyTarget(rec), audit.Failure, 403)
	ae.Reason.ReasonForFailure = reason
	ae.RequestData = mergeData(ae.RequestData, map[string]any{"keyCRN": rec.DiskKeyCRN, "eventType": ev.Action, "eventId": ev.ID})
	ae.ResponseData = map[string]any{"adopterKeyState": state}
	if err := s.audit.Record(actx, ae); err != nil {
		return err
	}
	return s.keys.AckEvent(actx, ev, state, "")
}

// unlockForKey unlocks the deployment after its key was enabled or
// restored. The caller holds d.op.
func (s *Service) unlockForKey(ctx context.Context, d *deployment, ev KeyEvent) error {
	rec, lock, _ := d.snapshot()
	actx := d.ctx(ctx)
	if lock != "" && !rec.Suspended {
		if cause, reason, err := s.unlock(ctx, d); err != nil {
			s.lockData(d, cause, reason)
			return err
		}
	} else if rec.Suspended {
		d.mu.Lock()
		d.lock, d.lockCause = "", ""
		d.mu.Unlock()
	}
	if err := s.states.SetState(ctx, rec.GUID, StateActive, ""); err != nil {
		s.log.Warn("streams: cannot set the instance state", "deployment", rec.GUID, "err", err)
	}
	rec, _, _ = d.snapshot()
	ae := audit.NewEvent(actx, actionStorageKeyRead, storageKeyTarget(rec), audit.Success, 200)
	ae.RequestData = mergeData(ae.RequestData, map[string]any{"keyCRN": rec.DiskKeyCRN, "eventType": ev.Action, "eventId": ev.ID})
	ae.ResponseData = map[string]any{"adopterKeyState": DEKEnabled, "keyVersion": rec.KeyVersion}
	if err := s.audit.Record(actx, ae); err != nil {
		return err
	}
	return s.keys.AckEvent(actx, ev, DEKEnabled, rec.KeyVersion)
}

// rotate rewraps the deployment's wrapped DEKs with the key's new version,
// then re-encrypts the whole log under a fresh DEK in the background, in a
// "Syncing KMS state" task; the event is acknowledged when that is done.
// The caller holds d.op.
func (s *Service) rotate(ctx context.Context, d *deployment, ev KeyEvent) error {
	const op = "streams.rotate"
	d.mu.Lock()
	if r := d.reenc; r != nil {
		// Already re-encrypting (resumed after a restart, or a second
		// rotation): rewrap below, acknowledge when it finishes.
		if r.event == nil || r.event.ID != ev.ID {
			e := ev
			r.event = &e
		} else {
			d.mu.Unlock()
			return nil
		}
	}
	rec := *d.rec
	d.mu.Unlock()
	actx := d.ctx(ctx)
	rewrapped, version, err := s.keys.Rewrap(actx, rec.DiskKeyCRN, rec.WrappedDEK, d.aad(rec.DEKID))
	if err != nil {
		return err
	}
	rec.WrappedDEK, rec.KeyVersion = rewrapped, version
	if rec.NextDEKID != "" {
		if rec.NextWrappedDEK, rec.NextKeyVersion, err = s.keys.Rewrap(actx, rec.DiskKeyCRN, rec.NextWrappedDEK, d.aad(rec.NextDEKID)); err != nil {
			return err
		}
	}
	rec.UpdatedAt = s.clock.Now()
	if err := s.saveRecord(ctx, d, &rec, nil); err != nil {
		return errs.Internalf(op, err)
	}
	if err := s.keys.UpdateRegistration(actx, rec.DiskKeyCRN, rec.CRN, version); err != nil {
		return err
	}
	d.mu.Lock()
	st, cur, running := d.st, d.dek, d.reenc != nil
	d.mu.Unlock()
	if running {
		return nil
	}
	if st == nil {
		// Locked or suspended: the DEK is rewrapped; the data is re-encrypted
		// under a fresh DEK after the next rotation that finds it open.
		return s.finishRotation(actx, d, ev)
	}
	task, err := s.tasks.Start(actx, rec.CRN, TaskSyncingKMSState)
	if err != nil {
		return err
	}
	next := newDEK()
	wrapped, nextVersion, err := s.wrapDEK(ctx, &rec, next)
	if err != nil {
		next.Wipe()
		task.Fail(actx, "the new data key could not be wrapped: "+errMsg(err))
		return err
	}
	rec.NextDEKID, rec.NextWrappedDEK, rec.NextKeyVersion = next.ID, wrapped, nextVersion
	rec.UpdatedAt = s.clock.Now()
	// The next DEK is stored before any block is sealed with it, so that a
	// re-encryption interrupted by a crash resumes after a restart.
	if err := s.saveRecord(ctx, d, &rec, nil); err != nil {
		next.Wipe()
		task.Fail(actx, "the new data key could not be stored")
		return errs.Internalf(op, err)
	}
	e := ev
	s.startReencryption(d, st, next, cur, task, &e)
	return nil
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
	s.startReencryption(d, st, next, old, task, nil)
}

// startReencryption makes next the log's sealing key and rewrites the rest
// under it in the background.
func (s *Service) startReencryption(d *deployment, st *seglog.Store, next, old *seglog.DEK, task Task, ev *KeyEvent) {
	rctx, cancel := context.WithCancel(context.Background())
	r := &reencryption{cancel: cancel, done: make(chan struct{}), event: ev}
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
		if err != nil {
			if task != nil {
				task.Fail(context.WithoutCancel(actx), "re-encryption interrupted ("+errMsg(err)+"); it resumes when the deployment is unlocked")
			}
			d.mu.Lock()
			d.reenc = nil
			d.mu.Unlock()
			return
		}
		d.mu.Lock()
		event := r.event
		d.mu.Unlock()
		if err := s.finishReencryption(context.WithoutCancel(actx), d, task, event); err != nil {
			s.log.Error("streams: finishing the re-encryption", "deployment", rec.GUID, "err", err)
		}
	}()
}

// finishReencryption makes the next DEK the deployment's only DEK, deletes
// the old wrapped DEK, wipes the old plain one and acknowledges the
// rotation.
func (s *Service) finishReencryption(ctx context.Context, d *deployment, task Task, ev *KeyEvent) error {
	d.mu.Lock()
	rec := *d.rec
	d.mu.Unlock()
	rec.DEKID, rec.WrappedDEK, rec.KeyVersion = rec.NextDEKID, rec.NextWrappedDEK, rec.NextKeyVersion
	rec.NextDEKID, rec.NextWrappedDEK, rec.NextKeyVersion = "", nil, ""
	rec.UpdatedAt = s.clock.Now()
	ae := audit.NewEvent(ctx, actionStorageKeyUpdate, storageKeyTarget(rec), audit.Success, 200)
	ae.RequestData = mergeData(ae.RequestData, map[string]any{"keyCRN": rec.DiskKeyCRN, "eventType": ActionRotate})
	ae.ResponseData = map[string]any{"adopterKeyState": DEKEnabled, "keyVersion": rec.KeyVersion}
	if ev != nil {
		ae.RequestData["eventId"] = ev.ID
	}
	if err := s.saveRecord(ctx, d, &rec, ae); err != nil {
		if task != nil {
			task.Fail(ctx, "the new data key could not be stored")
		}
		return err
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
	if ev != nil {
		return s.keys.AckEvent(ctx, *ev, DEKEnabled, rec.KeyVersion)
	}
	return nil
}

// finishRotation records and acknowledges a rotation that needed no
// re-encryption (the deployment was locked).
func (s *Service) finishRotation(ctx context.Context, d *deployment, ev KeyEvent) error {
	rec, _, _ := d.snapshot()
	ae := audit.NewEvent(ctx, actionStorageKeyUpdate, storageKeyTarget(rec), audit.Success, 200)
	ae.RequestData = mergeData(ae.RequestData, map[string]any{"keyCRN": rec.DiskKeyCRN, "eventType": ActionRotate, "eventId": ev.ID})
	ae.ResponseData = map[string]any{"adopterKeyState": DEKEnabled, "keyVersion": rec.KeyVersion}
	if err := s.audit.Record(ctx, ae); err != nil {
		return err
	}
	return s.keys.AckEvent(ctx, ev, DEKEnabled, rec.KeyVersion)
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
