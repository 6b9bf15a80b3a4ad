package kms

import (
	"context"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// Run is the KMS scheduler: until ctx ends it rotates keys whose rotation
// policy is due, deactivates expired keys and purges keys deleted 90 days
// ago, looking every SchedulerTick on the service's clock.
func (s *Service) Run(ctx context.Context) error {
	for {
		if _, err := s.RunDue(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("kms: scheduler", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.clock.After(s.tick):
		}
	}
}

// dueWork is one scheduled action on one key.
type dueWork struct {
	guid, keyID, action string
}

// RunDue does every scheduled action that is due now and returns how many
// it did.
func (s *Service) RunDue(ctx context.Context) (int, error) {
	now := s.clock.Now()
	var work []dueWork
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT k.id, k.instance_guid, k.state, k.extractable, k.imported, k.creation_date, k.last_rotate_date,
			k.expiration_date, k.deletion_date, COALESCE(p.enabled, 0), COALESCE(p.interval_month, 0)
			FROM kms_keys k LEFT JOIN kms_key_policies p ON p.key_id = k.id AND p.policy_type = 'rotation'`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id, guid, created, rotated, expires, deleted string
			var state, interval int
			var extractable, imported, rotation bool
			if err := rows.Scan(&id, &guid, &state, &extractable, &imported, &created, &rotated, &expires, &deleted, &rotation, &interval); err != nil {
				return err
			}
			switch {
			case state == StateDestroyed:
				if !now.Before(store.ParseTime(deleted).Add(AutoPurgeAfter)) {
					work = append(work, dueWork{guid, id, auth.KMSKeyPurge})
				}
			case (state == StateActive || state == StateSuspended) && expires != "" && !now.Before(store.ParseTime(expires)):
				work = append(work, dueWork{guid, id, "kms.secrets.expire"})
			case state == StateActive && rotation && interval > 0 && !extractable && !imported:
				from := store.ParseTime(created)
				if rotated != "" {
					from = store.ParseTime(rotated)
				}
				if !now.Before(from.Add(time.Duration(interval) * monthLength)) {
					work = append(work, dueWork{guid, id, auth.KMSKeyRotate})
				}
			}
		}
		return rows.Err()
	})
	if err != nil {
		return 0, errs.Internalf("kms.RunDue", err)
	}
	done := 0
	for _, w := range work {
		if err := s.runScheduled(ctx, w); err != nil {
			s.log.Error("kms: scheduled action", "action", w.action, "key", w.keyID, "err", err)
			continue
		}
		done++
	}
	return done, nil
}

// runScheduled does one scheduled action as the KMS itself, in one
// transaction with its audit event.
func (s *Service) runScheduled(ctx context.Context, w dueWork) error {
	ctx = httpapi.WithCorrelationID(ctx, uuid.NewString())
	var in Instance
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		if err := tx.QueryRow(`SELECT guid, crn, account_id, region FROM kms_instances WHERE guid = ?`, w.guid).
			Scan(&in.GUID, &in.CRN, &in.AccountID, &in.Region); err != nil {
			return err
		}
		k, err := loadKey(tx, w.guid, w.keyID)
		if err != nil {
			return err
		}
		// The scheduler acts as the KMS itself: that is who the Activity
		// Tracker shows as the initiator.
		ctx := auth.WithPrincipal(ctx, &auth.Principal{IAMID: "crn-kms-scheduler", AccountID: in.AccountID, Name: "Key Protect scheduler",
			Type: auth.Service, ServiceName: "kms", SourceCRN: in.CRN})
		ev := success(w.action, keyTarget(in, k))
		ev.RequestData["instanceID"] = in.GUID
		ev.RequestData["initiatedBy"] = "scheduler"
		ev.ResponseData["keyId"] = k.ID
		c := &keyCall{ctx: ctx, tx: tx, in: in, key: k, now: s.clock.Now(), ev: &ev}
		switch w.action {
		case auth.KMSKeyPurge:
			err = purge(c)
		case auth.KMSKeyRotate:
			m := seal.RandomKey()
			err = s.rotate(c, m)
			seal.Wipe(m)
		default:
			now := store.Time(c.now)
			_, err = tx.Exec(`UPDATE kms_keys SET state = ?, last_update_date = ? WHERE id = ?`, StateDeactivated, now, k.ID)
			ev.ResponseData["keyState"] = StateDeactivated
		}
		if err != nil {
			return err
		}
		s.hot.invalidateOnCommit(tx)
		return s.audit.Append(ctx, tx, ev)
	})
	return err
}
