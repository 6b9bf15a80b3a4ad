package backup

import (
	"context"
	"time"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams"
)

// scheduleTick is the longest the scheduler sleeps: a deployment created
// meanwhile is seen within it.
const scheduleTick = time.Hour

// Run takes scheduled backups until ctx ends: each deployment every
// backup_schedule hours (daily by default), counted from its last
// scheduled backup, or from its creation.
func (s *Service) Run(ctx context.Context) error {
	for {
		s.prune(ctx)
		wait := s.runDue(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-s.clock.After(wait):
		}
	}
}

// runDue starts the backups that are due and returns how long until the
// next one is.
func (s *Service) runDue(ctx context.Context) time.Duration {
	now := s.clock.Now()
	soonest := scheduleTick
	deps, err := s.cfg.Deployments.Deployments(ctx, "")
	if err != nil {
		s.log.Warn("backup: cannot list deployments", "err", err)
		return soonest
	}
	for _, dep := range deps {
		if ctx.Err() != nil {
			return soonest
		}
		inst, err := s.cfg.Controller.LookupInstance(ctx, dep.GUID)
		if err != nil || (inst.State != controller.StateActive && inst.State != controller.StateInactive) {
			continue
		}
		hours, err := streams.BackupScheduleHours(inst.Parameters)
		if err != nil {
			hours = 24
		}
		every := time.Duration(hours) * time.Hour
		last, err := s.lastScheduled(ctx, dep.GUID)
		if err != nil {
			s.log.Warn("backup: cannot read the last scheduled backup", "deployment", dep.GUID, "err", err)
			continue
		}
		if last.IsZero() {
			last = dep.CreatedAt
		}
		due := last.Add(every)
		if !now.Before(due) {
			sctx := auth.WithPrincipal(ctx, deploymentIdentity(inst.AccountID, inst.GUID, inst.CRN.String()))
			if _, err := s.start(sctx, inst, TypeScheduled); err != nil {
				s.log.Warn("backup: cannot start a scheduled backup", "deployment", dep.GUID, "err", err)
			}
			due = now.Add(every)
		}
		soonest = min(soonest, due.Sub(now))
	}
	return max(soonest, time.Second)
}

func (s *Service) lastScheduled(ctx context.Context, guid string) (time.Time, error) {
	var last string
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT COALESCE(MAX(created_at), '') FROM backup_backups WHERE deployment_guid = ? AND type = ?`, guid, TypeScheduled).Scan(&last)
	})
	if err != nil || last == "" {
		return time.Time{}, err
	}
	return store.ParseTime(last), nil
}

// ActionDelete is the audit action of a backup removed at the end of its
// retention.
const ActionDelete = "event-streams.backup.delete"

// prune deletes the backups older than the retention: their objects
// first, then their records, each with an audit event. A backup whose
// object cannot be deleted stays listed and is tried again next time.
func (s *Service) prune(ctx context.Context) {
	cutoff := s.clock.Now().Add(-s.cfg.Retention)
	var old []Backup
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		old, err = queryBackups(tx, `created_at < ? AND status <> ? ORDER BY created_at LIMIT 1000`, store.Time(cutoff), StatusRunning)
		return err
	})
	if err != nil {
		s.log.Warn("backup: cannot list expired backups", "err", err)
		return
	}
	for i := range old {
		b := &old[i]
		if err := s.deleteExpired(ctx, b); err != nil {
			s.log.Warn("backup: cannot delete an expired backup", "backup", b.CRN, "err", err)
		}
	}
}

func (s *Service) deleteExpired(ctx context.Context, b *Backup) error {
	if b.Status == StatusCompleted {
		vol, err := OpenVolume(ctx, s.cfg.Volumes, b.DeploymentGUID)
		if err != nil {
			return err
		}
		if err := vol.Delete(ctx, b.Object); err != nil {
			return err
		}
	}
	actx := auth.WithPrincipal(ctx, blockStorage(b.AccountID, b.DeploymentGUID, b.DeploymentCRN))
	ev := audit.NewEvent(actx, ActionDelete, audit.Target{ID: b.CRN, Name: b.DeploymentName, TypeURI: "event-streams/backup"}, audit.Success, 204)
	ev.RequestData = mergeData(ev.RequestData, map[string]any{"deploymentId": b.DeploymentCRN, "reason": "retention",
		"retentionDays": int(s.cfg.Retention / (24 * time.Hour))})
	return s.db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`DELETE FROM backup_backups WHERE id = ?`, b.ID); err != nil {
			return err
		}
		return s.audit.Append(tx, ev)
	})
}
