package kpapi

import (
	"net/http"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/kms"
)

func registrationQuery(r *http.Request) (kms.RegistrationQuery, bool, error) {
	limit, offset, total, err := paging(r)
	if err != nil {
		return kms.RegistrationQuery{}, false, err
	}
	prevent, err := queryBool(r, "preventKeyDeletion")
	// The query value is the URL-encoded CRN pattern, already decoded once by
	// the URL parser.
	return kms.RegistrationQuery{CRNPattern: r.URL.Query().Get("urlEncodedResourceCRNQuery"), PreventKeyDeletion: prevent,
		Limit: limit, Offset: offset}, total, err
}

func (a *API) listRegistrations(c *call, keyID string) error {
	q, total, err := registrationQuery(c.r)
	if err != nil {
		return err
	}
	l, err := a.kms.ListRegistrations(c.r.Context(), c.guid, keyID, q)
	if err != nil {
		return err
	}
	writeCollection(c.w, http.StatusOK, typeRegistration, l.Registrations, totalIf(total, l.Total))
	return nil
}

func (a *API) listKeyRegistrations(c *call) error { return a.listRegistrations(c, c.r.PathValue("id")) }

func (a *API) listAllRegistrations(c *call) error { return a.listRegistrations(c, "") }

// registrationResource is a registration_input resource.
type registrationResource struct {
	Description          *string `json:"description"`
	RegistrationMetadata *string `json:"registrationMetadata"`
	PreventKeyDeletion   *bool   `json:"preventKeyDeletion"`
	KeyVersionID         *string `json:"keyVersionId"`
	KeyVersion           *struct {
		ID string `json:"id"`
	} `json:"keyVersion"`
}

func (a *API) writeRegistration(c *call) error {
	res, err := decodeCollection[registrationResource](c.r, 1, 1)
	if err != nil {
		return err
	}
	p := res[0]
	in := kms.RegistrationInput{Description: p.Description, RegistrationMetadata: p.RegistrationMetadata,
		PreventKeyDeletion: p.PreventKeyDeletion, KeyVersionID: p.KeyVersionID}
	if p.KeyVersion != nil && in.KeyVersionID == nil {
		in.KeyVersionID = &p.KeyVersion.ID
	}
	ctx, id, rc := c.r.Context(), c.r.PathValue("id"), c.r.PathValue("crn")
	var reg kms.Registration
	status := http.StatusOK
	switch c.r.Method {
	case http.MethodPost:
		reg, err = a.kms.CreateRegistration(ctx, c.guid, id, rc, in)
		status = http.StatusCreated
	case http.MethodPut:
		reg, err = a.kms.ReplaceRegistration(ctx, c.guid, id, rc, in)
	default:
		reg, err = a.kms.UpdateRegistration(ctx, c.guid, id, rc, in)
	}
	if err != nil {
		return err
	}
	writeCollection(c.w, status, typeRegistration, []kms.Registration{reg}, nil)
	return nil
}

func (a *API) deleteRegistration(c *call) error {
	if err := a.kms.DeleteRegistration(c.r.Context(), c.guid, c.r.PathValue("id"), c.r.PathValue("crn")); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// ackResource is an event_acknowledge resource.
type ackResource struct {
	EventID         string    `json:"eventId"`
	AdopterKeyState string    `json:"adopterKeyState"`
	Timestamp       time.Time `json:"timestamp"`
	KeyStateData    *struct {
		RewrappedKeyVersion string `json:"rewrappedKeyVersion"`
		KeyVersion          string `json:"keyVersion"`
	} `json:"keyStateData"`
	DeleteRegistration bool `json:"deleteRegistration"`
}

func (a *API) eventAck(c *call) error {
	res, err := decodeCollection[ackResource](c.r, 1, 1)
	if err != nil {
		return err
	}
	r := res[0]
	if r.EventID == "" {
		return errs.E("kpapi.eventAck", errs.Invalid, "INVALID_FIELD_ERR", "The field 'eventId' must be: provided").On("field", "eventId")
	}
	ack := kms.EventAck{EventID: r.EventID, AdopterKeyState: r.AdopterKeyState, Timestamp: r.Timestamp, DeleteRegistration: r.DeleteRegistration}
	if d := r.KeyStateData; d != nil {
		ack.KeyVersion = d.RewrappedKeyVersion
		if ack.KeyVersion == "" {
			ack.KeyVersion = d.KeyVersion
		}
	}
	if err := a.kms.AckEvent(c.r.Context(), c.guid, ack); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}

// importTokenRequest is the body of POST /import_token.
type importTokenRequest struct {
	Expiration           int `json:"expiration"`
	MaxAllowedRetrievals int `json:"maxAllowedRetrievals"`
}

func (a *API) createImportToken(c *call) error {
	var body importTokenRequest
	if err := decodeBody(c.r, &body, false); err != nil {
		return err
	}
	t, err := a.kms.CreateImportToken(c.r.Context(), c.guid, body.Expiration, body.MaxAllowedRetrievals)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(c.w, http.StatusOK, t)
	return nil
}

func (a *API) getImportToken(c *call) error {
	t, err := a.kms.GetImportToken(c.r.Context(), c.guid)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(c.w, http.StatusOK, t)
	return nil
}

func (a *API) listKeyRings(c *call) error {
	limit, offset, total, err := paging(c.r)
	if err != nil {
		return err
	}
	rings, n, err := a.kms.ListKeyRings(c.r.Context(), c.guid, limit, offset)
	if err != nil {
		return err
	}
	writeCollection(c.w, http.StatusOK, typeKeyRing, rings, totalIf(total, n))
	return nil
}

func (a *API) createKeyRing(c *call) error {
	if err := a.kms.CreateKeyRing(c.r.Context(), c.guid, c.r.PathValue("ring")); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusCreated)
	return nil
}

func (a *API) deleteKeyRing(c *call) error {
	force, err := queryBool(c.r, "force")
	if err != nil {
		return err
	}
	if err := a.kms.DeleteKeyRing(c.r.Context(), c.guid, c.r.PathValue("ring"), force != nil && *force); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}
