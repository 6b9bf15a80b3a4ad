package kms

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/store"
)

// Key lifecycle event types, sent to every service with a registration on
// the key.
const (
	EventRotate  = "rotate"
	EventDisable = "disable"
	EventEnable  = "enable"
	EventDelete  = "delete"
	EventRestore = "restore"
)

// KeyEvent tells a registered service that a key it uses changed. It stays
// pending until the service acknowledges it, so an event raised while the
// service was down is delivered when it starts.
type KeyEvent struct {
	ID            string
	Type          string
	InstanceGUID  string
	KeyID         string
	KeyCRN        string
	KeyVersion    KeyVersion
	ResourceCRNs  []string
	CorrelationID string
	CreatedAt     time.Time
}

// EventAck is a service's acknowledgement of a KeyEvent.
type EventAck struct {
	EventID            string
	AdopterKeyState    string // e.g. "DEK_ENABLED", "DEK_DISABLED", "DEK_DELETED"
	Timestamp          time.Time
	KeyVersion         string // the key version the service now uses (rewrappedKeyVersion)
	DeleteRegistration bool
}

// raiseEvent writes, in c's transaction, one event per service that has
// registrations on the key, and notes the lifecycle action for sync.
func (s *Service) raiseEvent(c *keyCall, typ string) error {
	const op = "kms.raiseEvent"
	now := store.Time(c.now)
	if _, err := c.tx.Exec(`UPDATE kms_keys SET last_lifecycle_at = ?, last_event_type = ? WHERE id = ?`, now, typ, c.key.ID); err != nil {
		return errs.Internalf(op, err)
	}
	rows, err := c.tx.Query(`SELECT service, resource_crn FROM kms_registrations WHERE key_id = ? ORDER BY service, resource_crn`, c.key.ID)
	if err != nil {
		return errs.Internalf(op, err)
	}
	byService := map[string][]string{}
	var services []string
	for rows.Next() {
		var svc, rc string
		if err := rows.Scan(&svc, &rc); err != nil {
			rows.Close()
			return errs.Internalf(op, err)
		}
		if _, ok := byService[svc]; !ok {
			services = append(services, svc)
		}
		byService[svc] = append(byService[svc], rc)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return errs.Internalf(op, err)
	}
	if len(services) == 0 {
		return nil
	}
	var seq int64
	if err := c.tx.QueryRow(`SELECT COALESCE(MAX(seq), 0) FROM kms_key_events`).Scan(&seq); err != nil {
		return errs.Internalf(op, err)
	}
	corr := httpapi.CorrelationID(c.ctx)
	if corr == "" {
		corr = uuid.NewString()
	}
	for _, svc := range services {
		seq++
		crns, _ := json.Marshal(byService[svc])
		if _, err := c.tx.Exec(`INSERT INTO kms_key_events (id, seq, service, type, instance_guid, key_id, key_crn, key_version_id,
			key_version_date, resource_crns, correlation_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			uuid.NewString(), seq, svc, typ, c.in.GUID, c.key.ID, keyCRN(c.in, c.key.ID), c.key.LatestVersion,
			c.key.LatestVersionDate, string(crns), corr, now); err != nil {
			return errs.Internalf(op, err)
		}
	}
	c.tx.OnCommit(func() {
		for _, svc := range services {
			s.poke(svc)
		}
	})
	c.ev.ResponseData["notifiedServices"] = services
	return nil
}

func (s *Service) channel(service string) chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	ch, ok := s.notify[service]
	if !ok {
		ch = make(chan struct{}, 1)
		s.notify[service] = ch
	}
	return ch
}

func (s *Service) poke(service string) {
	select {
	case s.channel(service) <- struct{}{}:
	default: // a poke is already waiting
	}
}

// Notifications returns a channel that receives whenever new events for
// service are pending. It is a wake-up, not the events: read them with
// PendingEvents.
func (s *Service) Notifications(service string) <-chan struct{} { return s.channel(service) }

// PendingEvents returns service's unacknowledged events, oldest first. It is
// the in-process delivery to Keyline's own services and checks no principal.
func (s *Service) PendingEvents(ctx context.Context, service string) ([]KeyEvent, error) {
	var out []KeyEvent
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT id, type, instance_guid, key_id, key_crn, key_version_id, key_version_date, resource_crns,
			correlation_id, created_at FROM kms_key_events WHERE service = ? AND acked_at = '' ORDER BY seq`, service)
		if err != nil {
			return errs.Internalf("kms.PendingEvents", err)
		}
		defer rows.Close()
		for rows.Next() {
			var e KeyEvent
			var vdate, crns, created string
			if err := rows.Scan(&e.ID, &e.Type, &e.InstanceGUID, &e.KeyID, &e.KeyCRN, &e.KeyVersion.ID, &vdate, &crns,
				&e.CorrelationID, &created); err != nil {
				return errs.Internalf("kms.PendingEvents", err)
			}
			e.KeyVersion.CreationDate = timePtr(vdate)
			e.CreatedAt = store.ParseTime(created)
			_ = json.Unmarshal([]byte(crns), &e.ResourceCRNs)
			out = append(out, e)
		}
		return rows.Err()
	})
	return out, err
}

// AckEvent records a service's acknowledgement of an event of the instance.
// A service principal may acknowledge only its own events.
func (s *Service) AckEvent(ctx context.Context, instanceGUID string, ack EventAck) error {
	const op = "kms.AckEvent"
	p, in, err := s.instance(ctx, op, instanceGUID)
	if err != nil {
		s.recordFailure(ctx, auth.KMSEventAck, target{crn: in.CRN, name: instanceGUID, typ: typeInstance}, err)
		return err
	}
	var ev KeyEvent
	var service, acked string
	err = s.db.Read(ctx, func(tx *store.Tx) error {
		err := tx.QueryRow(`SELECT type, key_id, key_crn, service, acked_at, key_version_id FROM kms_key_events WHERE id = ? AND instance_guid = ?`,
			ack.EventID, in.GUID).Scan(&ev.Type, &ev.KeyID, &ev.KeyCRN, &service, &acked, &ev.KeyVersion.ID)
		if store.IsNoRows(err) {
			return errs.E(op, errs.NotExist, "EVENT_NOT_FOUND_ERR", "The event does not exist").On("field", "eventId")
		}
		return err
	})
	t := target{crn: ev.KeyCRN, name: ev.KeyID, typ: typeKey}
	if err == nil {
		err = s.authorize(ctx, op, p, auth.KMSEventAck, in, ev.KeyID)
	}
	if err == nil && p.Type == auth.Service && p.ServiceName != service {
		err = errs.E(op, errs.Permission, "RESOURCE_OWNER_ERR", "The event was sent to another service")
	}
	if err != nil {
		if t.crn == "" {
			t = instanceTarget(in)
		}
		s.recordFailure(ctx, auth.KMSEventAck, t, err)
		return err
	}
	action := "kms.secrets.ack-" + ev.Type
	return s.db.Tx(ctx, func(tx *store.Tx) error {
		now := s.clock.Now()
		if acked != "" {
			return nil // acknowledged already: acks are idempotent
		}
		if _, err := tx.Exec(`UPDATE kms_key_events SET acked_at = ?, ack_state = ? WHERE id = ?`, store.Time(now), ack.AdopterKeyState, ack.EventID); err != nil {
			return errs.Internalf(op, err)
		}
		if ack.DeleteRegistration {
			if _, err := tx.Exec(`DELETE FROM kms_registrations WHERE key_id = ? AND service = ?`, ev.KeyID, service); err != nil {
				return errs.Internalf(op, err)
			}
		}
		e := success(action, t)
		e.RequestData["instanceID"] = in.GUID
		e.ResponseData["eventAckData"] = map[string]any{"eventId": ack.EventID, "eventType": ev.Type, "keyState": ack.AdopterKeyState,
			"eventAckTimeStamp": store.Time(ack.Timestamp), "newKeyVersionId": ack.KeyVersion, "oldKeyVersionId": ev.KeyVersion.ID}
		return s.audit.Append(ctx, tx, e)
	})
}

// serviceOf is the service-name segment of a registration's resource CRN.
func serviceOf(resourceCRN string) string {
	c, err := crn.Parse(resourceCRN)
	if err != nil {
		return ""
	}
	return c.ServiceName
}
