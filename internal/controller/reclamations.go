package controller

import (
	"context"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/store"
)

// Reclamation states. SCHEDULED waits for its target time; RESTORING and
// RECLAIMING are held by whoever claimed them until lease_until, so that a
// process that stops mid-way leaves work the scheduler takes up again.
const (
	ReclamationScheduled  = "SCHEDULED"
	ReclamationRestoring  = "RESTORING"
	ReclamationReclaiming = "RECLAIMING"
	ReclamationRestored   = "RESTORED"
	ReclamationReclaimed  = "RECLAIMED"
)

const (
	// reclaimLease is how long a claimed reclamation is left to its claimer
	// before another attempt may start; a broker call should take far less.
	reclaimLease = 10 * time.Minute
	// maxRetryDelay caps the backoff between failed reclaim attempts.
	maxRetryDelay = time.Hour
	// maxSchedulerSleep bounds how long the scheduler sleeps, so that it
	// notices reclamations written by another process.
	maxSchedulerSleep = 5 * time.Minute
)

// Reclamation is a deleted instance waiting to be reclaimed or restored.
type Reclamation struct {
	ID              string
	InstanceGUID    string
	InstanceCRN     crn.CRN
	AccountID       string
	ResourceGroupID string
	State           string
	TargetTime      time.Time // the end of the reclamation window
	Attempts        int       // reclaim attempts so far
	LastError       string    // why the last reclaim attempt failed, if it did

	CreatedAt, UpdatedAt time.Time
	CreatedBy, UpdatedBy string
}

// ReclamationFilter narrows ListReclamations.
type ReclamationFilter struct {
	AccountID       string // "" or the caller's account
	InstanceID      string // resource_instance_id: GUID or CRN
	ResourceGroupID string
}

// ListReclamations lists the reclamations in progress (scheduled, restoring
// or reclaiming) of instances the caller may read.
func (c *Controller) ListReclamations(ctx context.Context, f ReclamationFilter) ([]Reclamation, error) {
	const op = "controller.ListReclamations"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	out := []Reclamation{}
	if f.AccountID != "" && f.AccountID != p.AccountID {
		return out, nil
	}
	where := []string{"r.account_id = ?", "r.state IN (?, ?, ?)"}
	args := []any{p.AccountID, ReclamationScheduled, ReclamationRestoring, ReclamationReclaiming}
	if f.InstanceID != "" {
		where, args = append(where, "(i.guid = ? OR i.crn = ?)"), append(args, f.InstanceID, f.InstanceID)
	}
	if f.ResourceGroupID != "" {
		where, args = append(where, "r.resource_group_id = ?"), append(args, f.ResourceGroupID)
	}
	var recs []Reclamation
	var services []string
	err = c.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT `+reclamationColumns+`, i.service_name FROM rc_reclamations r JOIN rc_instances i ON i.guid = r.instance_guid
			WHERE `+strings.Join(where, " AND ")+` ORDER BY r.created_at, r.id`, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var svc string
			r, err := scanReclamation(rows, &svc)
			if err != nil {
				return err
			}
			recs, services = append(recs, *r), append(services, svc)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	for i, r := range recs {
		err := c.authorize(ctx, op, p, auth.InstanceRead, &Instance{GUID: r.InstanceGUID, AccountID: r.AccountID, ServiceName: services[i]})
		if errs.Is(errs.Permission, err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// GetReclamation returns a reclamation by id.
func (c *Controller) GetReclamation(ctx context.Context, id string) (*Reclamation, error) {
	const op = "controller.GetReclamation"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	rec, inst, err := c.loadReclamation(ctx, op, id)
	if err != nil {
		return nil, err
	}
	if err := c.authorize(ctx, op, p, auth.InstanceRead, inst); err != nil {
		return nil, reclamationHidden(op, err)
	}
	return rec, nil
}

// RestoreReclamation brings a deleted instance back: its broker resumes it
// and it is active again.
func (c *Controller) RestoreReclamation(ctx context.Context, id string) (*Reclamation, error) {
	const op = "controller.RestoreReclamation"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	rec, inst, unlock, err := c.loadReclamationLocked(ctx, op, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	action := inst.ServiceName + ".instance.restore"
	if err := c.authorize(ctx, op, p, auth.InstanceUpdate, inst); err != nil {
		if err = reclamationHidden(op, err); !errs.Is(errs.NotExist, err) {
			c.recordFailure(ctx, action, inst, err)
		}
		return nil, err
	}
	entry, err := c.service(op, inst.ServiceName)
	if err != nil {
		c.recordFailure(ctx, action, inst, err)
		return nil, err
	}
	now := c.now()
	claimed, err := c.claim(ctx, rec.ID, ReclamationRestoring, `state = ?`, ReclamationScheduled)
	if err != nil {
		return nil, err
	}
	if !claimed {
		err := errs.Ef(op, errs.Conflict, "RECLAMATION_NOT_RESTORABLE", "The reclamation is %s; only a scheduled reclamation can be restored", rec.State)
		c.recordFailure(ctx, action, inst, err)
		return nil, err
	}
	// From here the operation runs to its end and is recorded even if the
	// caller goes away: the broker's work must not go unrecorded.
	ctx = context.WithoutCancel(ctx)
	hctx, held := holding(ctx, inst.GUID)
	if berr := entry.broker.Resume(hctx, *inst); berr != nil {
		berr = brokerError(op, berr)
		err := c.db.Tx(ctx, func(tx *store.Tx) error {
			if err := setReclamationState(tx, rec.ID, ReclamationScheduled, "", now, p.IAMID); err != nil {
				return err
			}
			return c.appendEvent(ctx, tx, eventFor(action, inst, berr))
		})
		if err != nil {
			return nil, err
		}
		return nil, berr
	}
	// It comes back in the condition its broker reports (inactive, say,
	// when its root key was disabled or deleted meanwhile), or else as it
	// was deleted: active, or inactive for its reason.
	switch {
	case held.reported:
		inst.State, inst.StateReason = held.state, held.reason
	case inst.StateReason != "":
		inst.State = StateInactive
	default:
		inst.State = StateActive
	}
	inst.RestoredAt, inst.RestoredBy, inst.UpdatedAt, inst.UpdatedBy = now, p.IAMID, now, p.IAMID
	inst.DeletedAt, inst.DeletedBy, inst.ScheduledReclaimAt, inst.ScheduledReclaimBy = time.Time{}, "", time.Time{}, ""
	inst.LastOperation = Operation{Type: "reclamation", State: "succeeded", Description: "Instance restored"}
	err = c.db.Tx(ctx, func(tx *store.Tx) error {
		if err := setReclamationState(tx, rec.ID, ReclamationRestored, "", now, p.IAMID); err != nil {
			return err
		}
		if err := updateInstance(tx, inst, StatePendingReclamation); err != nil {
			return err
		}
		return c.appendEvent(ctx, tx, eventFor(action, inst, nil))
	})
	if err != nil {
		return nil, err
	}
	rec.State, rec.UpdatedAt, rec.UpdatedBy = ReclamationRestored, now, p.IAMID
	return rec, nil
}

// ReclaimReclamation erases a deleted instance now, without waiting for the
// end of its window. If the broker fails, the reclamation stays RECLAIMING
// and the scheduler retries it: the caller gets it back in that state.
func (c *Controller) ReclaimReclamation(ctx context.Context, id string) (*Reclamation, error) {
	const op = "controller.ReclaimReclamation"
	p, err := principal(ctx, op)
	if err != nil {
		return nil, err
	}
	rec, inst, err := c.loadReclamation(ctx, op, id)
	if err != nil {
		return nil, err
	}
	action := inst.ServiceName + ".instance.reclaim"
	if err := c.authorize(ctx, op, p, auth.InstanceDelete, inst); err != nil {
		if err = reclamationHidden(op, err); !errs.Is(errs.NotExist, err) {
			c.recordFailure(ctx, action, inst, err)
		}
		return nil, err
	}
	claimed, err := c.claim(ctx, rec.ID, ReclamationReclaiming, `(state = ? OR (state = ? AND lease_until <= ?))`,
		ReclamationScheduled, ReclamationReclaiming, ts(c.now()))
	if err != nil {
		return nil, err
	}
	if !claimed {
		err := errs.Ef(op, errs.Conflict, "RECLAMATION_NOT_RECLAIMABLE", "The reclamation is %s and cannot be reclaimed now", rec.State)
		c.recordFailure(ctx, action, inst, err)
		return nil, err
	}
	return c.finishReclaim(ctx, rec.ID, p.IAMID)
}

// ReclaimDue reclaims every instance whose window has ended and retries the
// reclaims that failed or were interrupted. It returns when the next one is due.
func (c *Controller) ReclaimDue(ctx context.Context) (next time.Time, err error) {
	now := ts(c.now())
	var due []string
	err = c.db.Tx(ctx, func(tx *store.Tx) error {
		// A restore interrupted mid-way is scheduled again: the window still runs.
		if _, err := tx.Exec(`UPDATE rc_reclamations SET state = ?, lease_until = '' WHERE state = ? AND lease_until <= ?`,
			ReclamationScheduled, ReclamationRestoring, now); err != nil {
			return err
		}
		rows, err := tx.Query(`SELECT id FROM rc_reclamations WHERE (state = ? AND target_time <= ?) OR (state = ? AND lease_until <= ?) ORDER BY target_time`,
			ReclamationScheduled, now, ReclamationReclaiming, now)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				return err
			}
			due = append(due, id)
		}
		return rows.Err()
	})
	if err != nil {
		return time.Time{}, err
	}
	for _, id := range due {
		claimed, err := c.claim(ctx, id, ReclamationReclaiming, `((state = ? AND target_time <= ?) OR (state = ? AND lease_until <= ?))`,
			ReclamationScheduled, now, ReclamationReclaiming, now)
		if err != nil {
			return time.Time{}, err
		}
		if !claimed {
			continue // another caller took it
		}
		sctx := httpapi.WithCorrelationID(auth.WithPrincipal(ctx, schedulerPrincipal), uuid.NewString())
		if _, err := c.finishReclaim(sctx, id, schedulerPrincipal.IAMID); err != nil {
			c.logger.Error("reclaim", "reclamation", id, "err", err)
		}
	}
	var s1, s2 string
	err = c.db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT COALESCE(MIN(CASE WHEN state = ? THEN target_time END), ''),
			COALESCE(MIN(CASE WHEN state IN (?, ?) THEN lease_until END), '') FROM rc_reclamations`,
			ReclamationScheduled, ReclamationReclaiming, ReclamationRestoring).Scan(&s1, &s2)
	})
	next = parseTS(s1)
	if t := parseTS(s2); !t.IsZero() && (next.IsZero() || t.Before(next)) {
		next = t
	}
	return next, err
}

// schedulerPrincipal is who reclaims expired instances: the controller itself.
var schedulerPrincipal = &auth.Principal{IAMID: "resource-controller", Name: "resource-controller", Type: auth.Service,
	ServiceName: "resource-controller", CredentialType: "s2s-authorization"}

// Run reclaims instances as their reclamation windows end, until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	for {
		next, err := c.ReclaimDue(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.logger.Error("reclamation scheduler", "err", err)
		}
		wait := maxSchedulerSleep
		if !next.IsZero() {
			// Something came due while this pass ran: go again at once.
			// (What is claimed elsewhere has its lease in the future.)
			if !next.After(c.now()) {
				continue
			}
			wait = min(wait, next.Sub(c.now()))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.clock.After(wait):
		case <-c.wake:
		}
	}
}

// nudge wakes the scheduler to look at a newly scheduled reclamation.
func (c *Controller) nudge() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// claim moves a reclamation to state for one lease if cond holds, and
// reports whether it did: the claimer alone then calls the broker.
func (c *Controller) claim(ctx context.Context, id, state, cond string, condArgs ...any) (bool, error) {
	now := c.now()
	var claimed bool
	err := c.db.Tx(ctx, func(tx *store.Tx) error {
		attempts := "attempts"
		if state == ReclamationReclaiming {
			attempts = "attempts + 1"
		}
		res, err := tx.Exec(`UPDATE rc_reclamations SET state = ?, lease_until = ?, attempts = `+attempts+`, updated_at = ? WHERE id = ? AND `+cond,
			append([]any{state, ts(now.Add(reclaimLease)), ts(now), id}, condArgs...)...)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		claimed = n == 1
		return err
	})
	return claimed, err
}

// finishReclaim calls the broker for a claimed reclamation and records the
// outcome: the instance removed, or the failure and when to try again.
func (c *Controller) finishReclaim(ctx context.Context, id, by string) (*Reclamation, error) {
	const op = "controller.reclaim"
	rec, inst, unlock, err := c.loadReclamationLocked(ctx, op, id)
	if err != nil {
		return nil, err
	}
	defer unlock()
	action := inst.ServiceName + ".instance.reclaim"
	// The outcome is recorded even when the scheduler is stopping.
	ctx = context.WithoutCancel(ctx)
	var berr error
	entry, err := c.service(op, inst.ServiceName)
	if err != nil {
		berr = err
	} else if err := entry.broker.Reclaim(ctx, *inst); err != nil {
		berr = brokerError(op, err)
	}
	now := c.now()
	if berr != nil {
		retry := now.Add(retryDelay(rec.Attempts))
		err := c.db.Tx(ctx, func(tx *store.Tx) error {
			if _, err := tx.Exec(`UPDATE rc_reclamations SET lease_until = ?, last_error = ?, updated_at = ? WHERE id = ?`,
				ts(retry), safeMessage(berr), ts(now), id); err != nil {
				return err
			}
			return c.appendEvent(ctx, tx, eventFor(action, inst, berr))
		})
		if err != nil {
			return nil, err
		}
		c.nudge() // the scheduler may be asleep past the retry time
		c.logger.Warn("reclaim failed; will retry", "reclamation", id, "attempts", rec.Attempts, "retry_at", retry, "err", berr)
		rec.LastError = safeMessage(berr)
		return rec, nil
	}
	inst.State = StateRemoved
	inst.UpdatedAt, inst.UpdatedBy = now, by
	inst.LastOperation = Operation{Type: "reclamation", State: "succeeded", Description: "Instance reclaimed"}
	err = c.db.Tx(ctx, func(tx *store.Tx) error {
		if err := setReclamationState(tx, id, ReclamationReclaimed, "", now, by); err != nil {
			return err
		}
		if err := updateInstance(tx, inst, StatePendingReclamation); err != nil {
			return err
		}
		return c.appendEvent(ctx, tx, eventFor(action, inst, nil))
	})
	if err != nil {
		return nil, err
	}
	rec.State, rec.LastError, rec.UpdatedAt, rec.UpdatedBy = ReclamationReclaimed, "", now, by
	return rec, nil
}

// retryDelay doubles from a minute with each failed attempt, up to an hour.
func retryDelay(attempts int) time.Duration {
	d := time.Minute
	for i := 1; i < attempts && d < maxRetryDelay; i++ {
		d *= 2
	}
	return min(d, maxRetryDelay)
}

func setReclamationState(tx *store.Tx, id, state, lease string, now time.Time, by string) error {
	_, err := tx.Exec(`UPDATE rc_reclamations SET state = ?, lease_until = ?, last_error = '', updated_at = ?, updated_by = ? WHERE id = ?`,
		state, lease, ts(now), by, id)
	return err
}

func insertReclamation(tx *store.Tx, r *Reclamation) error {
	_, err := tx.Exec(`INSERT INTO rc_reclamations (id, instance_guid, account_id, resource_group_id, state, target_time, created_at, created_by, updated_at, updated_by)
		VALUES (?,?,?,?,?,?,?,?,?,?)`, r.ID, r.InstanceGUID, r.AccountID, r.ResourceGroupID, r.State, ts(r.TargetTime),
		ts(r.CreatedAt), r.CreatedBy, ts(r.UpdatedAt), r.UpdatedBy)
	return err
}

func (c *Controller) loadReclamation(ctx context.Context, op, id string) (*Reclamation, *Instance, error) {
	var rec *Reclamation
	var inst *Instance
	err := c.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		rec, err = scanReclamation(tx.QueryRow(`SELECT `+reclamationColumns+` FROM rc_reclamations r JOIN rc_instances i ON i.guid = r.instance_guid WHERE r.id = ?`, id))
		if store.IsNoRows(err) {
			return errNoReclamation(op)
		}
		if err != nil {
			return err
		}
		inst, err = instanceByID(tx, op, rec.InstanceGUID)
		return err
	})
	return rec, inst, err
}

// loadReclamationLocked reads a reclamation and its instance under the instance's lock.
func (c *Controller) loadReclamationLocked(ctx context.Context, op, id string) (*Reclamation, *Instance, func(), error) {
	rec, _, err := c.loadReclamation(ctx, op, id)
	if err != nil {
		return nil, nil, nil, err
	}
	unlock := c.lock(rec.InstanceGUID)
	rec, inst, err := c.loadReclamation(ctx, op, id)
	if err != nil {
		unlock()
		return nil, nil, nil, err
	}
	return rec, inst, unlock, nil
}

func errNoReclamation(op string) error {
	return errs.E(op, errs.NotExist, "RECLAMATION_NOT_FOUND", "The reclamation could not be found")
}

func reclamationHidden(op string, err error) error {
	if errs.Is(errs.NotExist, err) {
		return errNoReclamation(op)
	}
	return err
}

const reclamationColumns = `r.id, r.instance_guid, i.crn, r.account_id, r.resource_group_id, r.state, r.target_time, r.attempts, r.last_error,
	r.created_at, r.created_by, r.updated_at, r.updated_by`

func scanReclamation(row scanner, extra ...any) (*Reclamation, error) {
	var r Reclamation
	var crnStr, target, created, updated string
	dest := append([]any{&r.ID, &r.InstanceGUID, &crnStr, &r.AccountID, &r.ResourceGroupID, &r.State, &target, &r.Attempts, &r.LastError,
		&created, &r.CreatedBy, &updated, &r.UpdatedBy}, extra...)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	var err error
	if r.InstanceCRN, err = crn.Parse(crnStr); err != nil {
		return nil, errs.Internalf("controller.scanReclamation", err)
	}
	r.TargetTime, r.CreatedAt, r.UpdatedAt = parseTS(target), parseTS(created), parseTS(updated)
	return &r, nil
}
