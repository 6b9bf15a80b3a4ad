package kms

import (
	"context"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Registration records that a cloud resource (a deployment, a backup
// volume) is protected by a root key.
type Registration struct {
	KeyID                string     `json:"keyId"`
	KeyName              string     `json:"keyName,omitempty"`
	ResourceCRN          string     `json:"resourceCrn"`
	CreatedBy            string     `json:"createdBy"`
	CreationDate         time.Time  `json:"creationDate"`
	UpdatedBy            string     `json:"updatedBy"`
	LastUpdated          time.Time  `json:"lastUpdated"`
	Description          string     `json:"description,omitempty"`
	RegistrationMetadata string     `json:"registrationMetadata,omitempty"`
	PreventKeyDeletion   bool       `json:"preventKeyDeletion"`
	KeyVersion           KeyVersion `json:"keyVersion"`
}

// RegistrationInput is what a service sets on a registration; nil fields are
// left as they are (PATCH) or take their defaults (create).
type RegistrationInput struct {
	Description          *string
	RegistrationMetadata *string
	PreventKeyDeletion   *bool
	KeyVersionID         *string
}

// RegistrationQuery filters a registration list.
type RegistrationQuery struct {
	CRNPattern         string // a CRN pattern (crn.ParsePattern); "" = all
	PreventKeyDeletion *bool
	Limit, Offset      int
}

// RegistrationList is one page of registrations.
type RegistrationList struct {
	Registrations []Registration
	Total         int
}

const regCols = `r.key_id, k.name, r.resource_crn, r.created_by, r.creation_date, r.updated_by, r.last_updated, r.description,
	r.metadata, r.prevent_key_deletion, r.key_version_id, v.creation_date
	FROM kms_registrations r JOIN kms_keys k ON k.id = r.key_id LEFT JOIN kms_key_versions v ON v.id = r.key_version_id`

func scanRegistration(sc scanner) (Registration, error) {
	var r Registration
	var created, updated string
	var vdate *string
	err := sc.Scan(&r.KeyID, &r.KeyName, &r.ResourceCRN, &r.CreatedBy, &created, &r.UpdatedBy, &updated, &r.Description,
		&r.RegistrationMetadata, &r.PreventKeyDeletion, &r.KeyVersion.ID, &vdate)
	r.CreationDate, r.LastUpdated = store.ParseTime(created), store.ParseTime(updated)
	if vdate != nil {
		r.KeyVersion.CreationDate = timePtr(*vdate)
	}
	return r, err
}

// serviceOnly refuses anyone but a Keyline service principal, and a service
// acting on a resource that is not its own.
func serviceOnly(ctx context.Context, op, resourceCRN string) (crn.CRN, error) {
	p := auth.FromContext(ctx)
	if p == nil || p.Type != auth.Service {
		return crn.CRN{}, errs.E(op, errs.Permission, "SERVICE_ONLY_ERR", "Only a service can perform this action")
	}
	c, err := crn.Parse(resourceCRN)
	if err != nil {
		e := errs.As(err)
		return crn.CRN{}, errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'urlEncodedResourceCRN' must be: "+e.Msg).On("field", "urlEncodedResourceCRN")
	}
	if c.ServiceInstance == "" {
		return crn.CRN{}, errs.E(op, errs.Invalid, "INVALID_FIELD_ERR",
			"The field 'urlEncodedResourceCRN' must be: a CRN at least up to the service-instance segment").On("field", "urlEncodedResourceCRN")
	}
	if c.ServiceName != p.ServiceName {
		return crn.CRN{}, errs.E(op, errs.Permission, "RESOURCE_OWNER_ERR", "The resource CRN does not belong to the calling service")
	}
	return c, nil
}

// CreateRegistration registers resourceCRN as protected by a root key
// (service-to-service only).
func (s *Service) CreateRegistration(ctx context.Context, instanceGUID, keyID, resourceCRN string, in RegistrationInput) (Registration, error) {
	const op = "kms.CreateRegistration"
	return s.writeRegistration(ctx, op, auth.KMSRegistrationCreate, instanceGUID, keyID, resourceCRN, in)
}

// ReplaceRegistration sets every field of a registration.
func (s *Service) ReplaceRegistration(ctx context.Context, instanceGUID, keyID, resourceCRN string, in RegistrationInput) (Registration, error) {
	const op = "kms.ReplaceRegistration"
	return s.writeRegistration(ctx, op, auth.KMSRegistrationWrite, instanceGUID, keyID, resourceCRN, in)
}

// UpdateRegistration sets the given fields of a registration.
func (s *Service) UpdateRegistration(ctx context.Context, instanceGUID, keyID, resourceCRN string, in RegistrationInput) (Registration, error) {
	const op = "kms.UpdateRegistration"
	return s.writeRegistration(ctx, op, auth.KMSRegistrationMerge, instanceGUID, keyID, resourceCRN, in)
}

func (s *Service) writeRegistration(ctx context.Context, op, action, guid, keyID, resourceCRN string, in RegistrationInput) (Registration, error) {
	var out Registration
	// A user token is refused as such before authorization (SERVICE_ONLY_ERR).
	if _, err := serviceOnly(ctx, op, resourceCRN); err != nil {
		s.RecordRefusal(ctx, action, guid, err)
		return out, err
	}
	err := s.onKey(ctx, op, guid, keyID, action, true, func(c *keyCall) error {
		rc, err := serviceOnly(ctx, op, resourceCRN)
		if err != nil {
			return err
		}
		c.ev.RequestData["resourceCrn"] = resourceCRN
		if c.key.Extractable {
			return errs.E(op, errs.Unprocessable, "KEY_ROOT_REQ_REG_ERR", "Registrations can only be made with a root key")
		}
		if c.key.effectiveState(c.now) != StateActive {
			return errs.E(op, errs.Unprocessable, "KEY_INVALID_STATE_ERR", "Key is not in a valid state: registrations need an active key")
		}
		if in.Description != nil && len(*in.Description) > 240 {
			return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'description' must be: at most 240 characters").On("field", "description")
		}
		if in.RegistrationMetadata != nil && len(*in.RegistrationMetadata) > 4096 {
			return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'registrationMetadata' must be: at most 4,096 characters").On("field", "registrationMetadata")
		}
		existing, err := scanRegistration(c.tx.QueryRow(`SELECT `+regCols+` WHERE r.key_id = ? AND r.resource_crn = ?`, c.key.ID, resourceCRN))
		found := err == nil
		if err != nil && !store.IsNoRows(err) {
			return errs.Internalf(op, err)
		}
		by, now := principalID(ctx), store.Time(c.now)
		switch action {
		case auth.KMSRegistrationCreate:
			if found {
				return errs.E(op, errs.Conflict, "REGISTRATION_EXISTS_ERR", "The resource is already registered with this key")
			}
			if in.PreventKeyDeletion == nil {
				return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'preventKeyDeletion' must be: provided").On("field", "preventKeyDeletion")
			}
			existing = Registration{} // any version of the key; the latest if none is named
		case auth.KMSRegistrationWrite:
			if !found {
				return errs.E(op, errs.NotExist, "REGISTRATION_NOT_FOUND_ERR", "The registration does not exist")
			}
			existing.Description, existing.RegistrationMetadata, existing.PreventKeyDeletion = "", "", false
		default:
			if !found {
				return errs.E(op, errs.NotExist, "REGISTRATION_NOT_FOUND_ERR", "The registration does not exist")
			}
		}
		if in.Description != nil {
			existing.Description = *in.Description
		}
		if in.RegistrationMetadata != nil {
			existing.RegistrationMetadata = *in.RegistrationMetadata
		}
		if in.PreventKeyDeletion != nil {
			existing.PreventKeyDeletion = *in.PreventKeyDeletion
		}
		if in.KeyVersionID != nil && *in.KeyVersionID != existing.KeyVersion.ID {
			if err := newerVersion(c.tx, op, c.key.ID, existing.KeyVersion.ID, *in.KeyVersionID); err != nil {
				return err
			}
			existing.KeyVersion.ID = *in.KeyVersionID
		}
		if existing.KeyVersion.ID == "" {
			existing.KeyVersion.ID = c.key.LatestVersion
		}
		if found {
			_, err = c.tx.Exec(`UPDATE kms_registrations SET description = ?, metadata = ?, prevent_key_deletion = ?, key_version_id = ?,
				updated_by = ?, last_updated = ? WHERE key_id = ? AND resource_crn = ?`, existing.Description, existing.RegistrationMetadata,
				existing.PreventKeyDeletion, existing.KeyVersion.ID, by, now, c.key.ID, resourceCRN)
		} else {
			_, err = c.tx.Exec(`INSERT INTO kms_registrations (key_id, resource_crn, instance_guid, service, description, metadata,
				prevent_key_deletion, key_version_id, created_by, creation_date, updated_by, last_updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
				c.key.ID, resourceCRN, c.in.GUID, rc.ServiceName, existing.Description, existing.RegistrationMetadata,
				existing.PreventKeyDeletion, existing.KeyVersion.ID, by, now, by, now)
		}
		if err != nil {
			return errs.Internalf(op, err)
		}
		out, err = scanRegistration(c.tx.QueryRow(`SELECT `+regCols+` WHERE r.key_id = ? AND r.resource_crn = ?`, c.key.ID, resourceCRN))
		if err != nil {
			return errs.Internalf(op, err)
		}
		return nil
	})
	return out, err
}

// newerVersion checks that version is a version of the key no older than current.
func newerVersion(tx *store.Tx, op, keyID, current, version string) error {
	var cur, next int
	err := tx.QueryRow(`SELECT seq FROM kms_key_versions WHERE key_id = ? AND id = ?`, keyID, version).Scan(&next)
	if err == nil && current != "" {
		err = tx.QueryRow(`SELECT seq FROM kms_key_versions WHERE key_id = ? AND id = ?`, keyID, current).Scan(&cur)
	}
	if store.IsNoRows(err) || (err == nil && next < cur) {
		return errs.E(op, errs.Unprocessable, "KEY_VERSION_INVALID", "The key version is not a version of this key at least as new as the registration's")
	}
	if err != nil {
		return errs.Internalf(op, err)
	}
	return nil
}

// DeleteRegistration removes a registration (service-to-service only).
func (s *Service) DeleteRegistration(ctx context.Context, instanceGUID, keyID, resourceCRN string) error {
	const op = "kms.DeleteRegistration"
	if _, err := serviceOnly(ctx, op, resourceCRN); err != nil {
		s.RecordRefusal(ctx, auth.KMSRegistrationDelete, instanceGUID, err)
		return err
	}
	return s.onKey(ctx, op, instanceGUID, keyID, auth.KMSRegistrationDelete, true, func(c *keyCall) error {
		if _, err := serviceOnly(ctx, op, resourceCRN); err != nil {
			return err
		}
		c.ev.RequestData["resourceCrn"] = resourceCRN
		res, err := c.tx.Exec(`DELETE FROM kms_registrations WHERE key_id = ? AND resource_crn = ?`, c.key.ID, resourceCRN)
		if err != nil {
			return errs.Internalf(op, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errs.E(op, errs.NotExist, "REGISTRATION_NOT_FOUND_ERR", "The registration does not exist")
		}
		return nil
	})
}

// ListRegistrations lists the registrations of one key (idOrAlias) or, with
// idOrAlias "", of every key of the instance. A service sees only its own.
func (s *Service) ListRegistrations(ctx context.Context, instanceGUID, idOrAlias string, q RegistrationQuery) (RegistrationList, error) {
	const op = "kms.ListRegistrations"
	var out RegistrationList
	var pat *crn.Pattern
	if q.CRNPattern != "" {
		p, err := crn.ParsePattern(q.CRNPattern)
		if err != nil {
			return out, errs.E(op, errs.Invalid, "INVALID_QUERY_PARAM_ERR",
				"The query_param 'urlEncodedResourceCRNQuery' must be: a CRN pattern of 10 segments").On("query_param", "urlEncodedResourceCRNQuery")
		}
		if idOrAlias == "" && p.WildcardBefore(8) {
			return out, errs.E(op, errs.Invalid, "INVALID_QUERY_PARAM_ERR",
				"The query_param 'urlEncodedResourceCRNQuery' must be: a CRN pattern without wildcards in its first 8 segments").On("query_param", "urlEncodedResourceCRNQuery")
		}
		pat = &p
	}
	list := func(tx *store.Tx, where string, args ...any) error {
		rows, err := tx.Query(`SELECT `+regCols+` WHERE `+where+` ORDER BY r.creation_date, r.resource_crn`, args...)
		if err != nil {
			return errs.Internalf(op, err)
		}
		defer rows.Close()
		caller := auth.FromContext(ctx)
		var all []Registration
		for rows.Next() {
			r, err := scanRegistration(rows)
			if err != nil {
				return errs.Internalf(op, err)
			}
			if pat != nil && !pat.Match(r.ResourceCRN) {
				continue
			}
			if q.PreventKeyDeletion != nil && r.PreventKeyDeletion != *q.PreventKeyDeletion {
				continue
			}
			if caller != nil && caller.Type == auth.Service && serviceOf(r.ResourceCRN) != caller.ServiceName {
				continue
			}
			if caller == nil || caller.Type != auth.Service {
				r.RegistrationMetadata = "" // service-internal
			}
			all = append(all, r)
		}
		if err := rows.Err(); err != nil {
			return errs.Internalf(op, err)
		}
		out.Total = len(all)
		out.Registrations = page(all, q.Limit, q.Offset)
		return nil
	}
	if idOrAlias == "" {
		err := s.onInstance(ctx, op, instanceGUID, auth.KMSRegistrationList, false, func(tx *store.Tx, in Instance, ev *AuditEvent) error {
			if err := list(tx, `r.instance_guid = ?`, in.GUID); err != nil {
				return err
			}
			ev.ResponseData["totalResources"] = out.Total
			return nil
		})
		return out, err
	}
	err := s.onKey(ctx, op, instanceGUID, idOrAlias, auth.KMSRegistrationList, false, func(c *keyCall) error {
		if err := list(c.tx, `r.key_id = ?`, c.key.ID); err != nil {
			return err
		}
		c.ev.ResponseData["totalResources"] = out.Total
		return nil
	})
	return out, err
}

// page returns items[offset:offset+limit] (limit 0 = all).
func page[T any](items []T, limit, offset int) []T {
	if offset >= len(items) {
		return nil
	}
	items = items[offset:]
	if limit > 0 && limit < len(items) {
		items = items[:limit]
	}
	return items
}
