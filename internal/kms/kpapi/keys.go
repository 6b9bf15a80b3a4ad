package kpapi

import (
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/kms"
)

// keyResource is a key in a create request. Read-only attributes are not
// accepted; rotation and dualAuthDelete only on keys_with_policy_overrides.
type keyResource struct {
	Type                string              `json:"type"`
	Name                string              `json:"name"`
	Description         string              `json:"description"`
	Tags                []string            `json:"tags"`
	Aliases             []string            `json:"aliases"`
	Extractable         *bool               `json:"extractable"`
	ExpirationDate      *time.Time          `json:"expirationDate"`
	Payload             string              `json:"payload"`
	EncryptedNonce      string              `json:"encryptedNonce"`
	IV                  string              `json:"iv"`
	EncryptionAlgorithm string              `json:"encryptionAlgorithm"`
	Rotation            *kms.RotationPolicy `json:"rotation"`
	DualAuthDelete      *struct {
		Enabled *bool `json:"enabled"`
	} `json:"dualAuthDelete"`
}

func (a *API) createKey(overrides bool) func(c *call) error {
	return func(c *call) error {
		const op = "kpapi.createKey"
		res, err := decodeCollection[keyResource](c.r, 1, 1)
		if err != nil {
			return err
		}
		k := res[0]
		if k.Type != "" && k.Type != typeKey {
			return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'type' must be: "+typeKey).On("field", "type")
		}
		if !overrides && (k.Rotation != nil || k.DualAuthDelete != nil) {
			return errs.E(op, errs.Invalid, "BAD_BODY_ERR", "Invalid body data was passed: policies are set with keys_with_policy_overrides").On("field", "rotation")
		}
		in := kms.CreateKeyInput{Name: k.Name, Description: k.Description, Tags: k.Tags, Aliases: k.Aliases,
			Extractable: k.Extractable != nil && *k.Extractable, ExpirationDate: k.ExpirationDate, KeyRing: c.r.Header.Get("X-Kms-Key-Ring"),
			Payload: k.Payload, EncryptedNonce: k.EncryptedNonce, IV: k.IV, EncryptionAlgorithm: k.EncryptionAlgorithm,
			PolicyOverrides: overrides, Rotation: k.Rotation}
		if k.DualAuthDelete != nil {
			in.DualAuthDelete = k.DualAuthDelete.Enabled
		}
		key, err := a.kms.CreateKey(c.r.Context(), c.guid, in)
		if err != nil {
			return err
		}
		if preferMinimal(c.r) {
			c.w.WriteHeader(http.StatusCreated)
			return nil
		}
		writeCollection(c.w, http.StatusCreated, typeKey, []kms.Key{key}, nil)
		return nil
	}
}

// keyListOptions reads the filters of GET and HEAD /keys.
func keyListOptions(r *http.Request) (kms.ListKeysOptions, error) {
	var o kms.ListKeysOptions
	q := r.URL.Query()
	if s := q.Get("state"); s != "" {
		for _, part := range strings.Split(s, ",") {
			n, err := strconv.Atoi(part)
			if err != nil {
				return o, errs.E("kpapi", errs.Invalid, "INVALID_QUERY_PARAM_ERR", "The query_param 'state' must be: a comma list of 0, 1, 2, 3 and 5").On("query_param", "state")
			}
			o.States = append(o.States, n)
		}
	}
	var err error
	if o.Extractable, err = queryBool(r, "extractable"); err != nil {
		return o, err
	}
	o.Search, o.Sort, o.Filter = q.Get("search"), q.Get("sort"), q.Get("filter")
	o.KeyRing = r.Header.Get("X-Kms-Key-Ring")
	return o, nil
}

func (a *API) listKeys(c *call) error {
	o, err := keyListOptions(c.r)
	if err != nil {
		return err
	}
	limit, offset, total, err := paging(c.r)
	if err != nil {
		return err
	}
	o.Limit, o.Offset = limit, offset
	l, err := a.kms.ListKeys(c.r.Context(), c.guid, o)
	if err != nil {
		return err
	}
	writeCollection(c.w, http.StatusOK, typeKey, l.Keys, totalIf(total, l.Total))
	return nil
}

func (a *API) headKeys(c *call) error {
	o, err := keyListOptions(c.r)
	if err != nil {
		return err
	}
	n, err := a.kms.CountKeys(c.r.Context(), c.guid, o)
	if err != nil {
		return err
	}
	c.w.Header().Set("Key-Total", strconv.Itoa(n))
	c.w.WriteHeader(http.StatusOK)
	return nil
}

func (a *API) getKey(c *call) error {
	k, err := a.kms.GetKey(c.r.Context(), c.guid, c.r.PathValue("id"))
	if err != nil {
		return err
	}
	writeCollection(c.w, http.StatusOK, typeKey, []kms.Key{k}, nil)
	return nil
}

func (a *API) getKeyMetadata(c *call) error {
	k, err := a.kms.GetKeyMetadata(c.r.Context(), c.guid, c.r.PathValue("id"))
	if err != nil {
		return err
	}
	writeCollection(c.w, http.StatusOK, typeKey, []kms.Key{k}, nil)
	return nil
}

func (a *API) patchKey(c *call) error {
	var body struct {
		KeyRingID string `json:"keyRingID"`
	}
	if err := decodeBody(c.r, &body, true); err != nil {
		return err
	}
	k, err := a.kms.SetKeyRing(c.r.Context(), c.guid, c.r.PathValue("id"), body.KeyRingID)
	if err != nil {
		return err
	}
	writeCollection(c.w, http.StatusOK, typeKey, []kms.Key{k}, nil)
	return nil
}

// writeKeyOrNothing answers a DELETE as the Prefer header asks: 204, or 200
// with the key.
func writeKeyOrNothing(c *call, k kms.Key) {
	if preferRepresentation(c.r) {
		writeCollection(c.w, http.StatusOK, typeKey, []kms.Key{k}, nil)
		return
	}
	c.w.WriteHeader(http.StatusNoContent)
}

func (a *API) deleteKey(c *call) error {
	force, err := queryBool(c.r, "force")
	if err != nil {
		return err
	}
	k, err := a.kms.DeleteKey(c.r.Context(), c.guid, c.r.PathValue("id"), force != nil && *force)
	if err != nil {
		return err
	}
	writeKeyOrNothing(c, k)
	return nil
}

func (a *API) purgeKey(c *call) error {
	k, err := a.kms.PurgeKey(c.r.Context(), c.guid, c.r.PathValue("id"))
	if err != nil {
		return err
	}
	writeKeyOrNothing(c, k)
	return nil
}

func (a *API) restoreKey(c *call) error {
	if err := drainBody(c.r); err != nil {
		return err
	}
	k, err := a.kms.RestoreKey(c.r.Context(), c.guid, c.r.PathValue("id"))
	if err != nil {
		return err
	}
	if preferMinimal(c.r) {
		c.w.WriteHeader(http.StatusNoContent)
		return nil
	}
	writeCollection(c.w, http.StatusCreated, typeKey, []kms.Key{k}, nil)
	return nil
}

func (a *API) listVersions(c *call) error {
	limit, offset, total, err := paging(c.r)
	if err != nil {
		return err
	}
	all, err := queryBool(c.r, "allKeyStates")
	if err != nil {
		return err
	}
	l, err := a.kms.ListKeyVersions(c.r.Context(), c.guid, c.r.PathValue("id"), limit, offset, all != nil && *all)
	if err != nil {
		return err
	}
	writeCollection(c.w, http.StatusOK, typeVersion, l.Versions, totalIf(total, l.Total))
	return nil
}

// actionRequest is the body of every key action; each action uses its fields.
type actionRequest struct {
	Plaintext           *string  `json:"plaintext"`
	Ciphertext          *string  `json:"ciphertext"`
	AAD                 []string `json:"aad"`
	Payload             string   `json:"payload"`
	EncryptedNonce      string   `json:"encryptedNonce"`
	IV                  string   `json:"iv"`
	EncryptionAlgorithm string   `json:"encryptionAlgorithm"`
}

// actionResponse is the bare (not enveloped) answer of wrap, unwrap and rewrap.
type actionResponse struct {
	Plaintext           string          `json:"plaintext,omitempty"`
	Ciphertext          string          `json:"ciphertext,omitempty"`
	KeyVersion          *kms.KeyVersion `json:"keyVersion,omitempty"`
	RewrappedKeyVersion *kms.KeyVersion `json:"rewrappedKeyVersion,omitempty"`
}

// keyActions are the audit action and error phrase of each key action.
var keyActions = map[string]struct{ action, phrase string }{
	"wrap":                {"kms.secrets.wrap", "Key could not be wrapped"},
	"unwrap":              {"kms.secrets.unwrap", "Key could not be unwrapped"},
	"rewrap":              {"kms.secrets.rewrap", "Key could not be rewrapped"},
	"rotate":              {"kms.secrets.rotate", "Key could not be rotated"},
	"enable":              {"kms.secrets.enable", "Key could not be enabled"},
	"disable":             {"kms.secrets.disable", "Key could not be disabled"},
	"setKeyForDeletion":   {"kms.secrets.setkeyfordeletion", "Key could not be set for deletion"},
	"unsetKeyForDeletion": {"kms.secrets.unsetkeyfordeletion", "Key could not be unset for deletion"},
	"sync":                {"kms.secrets.sync", "Key could not be synced"},
}

func (a *API) keyActionFromPath(c *call) error { return a.keyAction(c, c.r.PathValue("action")) }

func (a *API) keyActionFromQuery(c *call) error {
	act := c.r.URL.Query().Get("action")
	if act == "restore" {
		c.action, c.phrase = "kms.secrets.restore", "Key could not be restored"
		return a.restoreKey(c)
	}
	return a.keyAction(c, act)
}

func decodeB64(field, s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errs.E("kpapi", errs.Invalid, "INVALID_FIELD_ERR", "The field '"+field+"' must be: a base64 encoded key material").On("field", field)
	}
	return b, nil
}

func (a *API) keyAction(c *call, action string) error {
	const op = "kpapi.keyAction"
	ctx, id := c.r.Context(), c.r.PathValue("id")
	if ka, known := keyActions[action]; known {
		c.action, c.phrase = ka.action, ka.phrase
	}
	var body actionRequest
	if err := decodeBody(c.r, &body, action == "unwrap" || action == "rewrap"); err != nil {
		return err
	}
	noContent := func(err error) error {
		if err == nil {
			c.w.WriteHeader(http.StatusNoContent)
		}
		return err
	}
	switch action {
	case "wrap":
		var pt []byte
		if body.Plaintext != nil {
			var err error
			if pt, err = decodeB64("plaintext", *body.Plaintext); err != nil {
				return err
			}
			if pt == nil {
				pt = []byte{}
			}
		}
		res, err := a.kms.Wrap(ctx, c.guid, id, pt, body.AAD)
		if err != nil {
			return err
		}
		out := actionResponse{Ciphertext: base64.StdEncoding.EncodeToString(res.Ciphertext), KeyVersion: &res.KeyVersion}
		if res.Plaintext != nil {
			out.Plaintext = base64.StdEncoding.EncodeToString(res.Plaintext)
		}
		writeAction(c.w, out)
		return nil
	case "unwrap", "rewrap":
		if body.Ciphertext == nil || *body.Ciphertext == "" {
			return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'ciphertext' must be: provided").On("field", "ciphertext")
		}
		ct, err := decodeB64("ciphertext", *body.Ciphertext)
		if err != nil {
			return err
		}
		do := a.kms.Unwrap
		if action == "rewrap" {
			do = a.kms.Rewrap
		}
		res, err := do(ctx, c.guid, id, ct, body.AAD)
		if err != nil {
			return err
		}
		out := actionResponse{KeyVersion: &res.KeyVersion, RewrappedKeyVersion: res.RewrappedKeyVersion}
		if res.Plaintext != nil {
			out.Plaintext = base64.StdEncoding.EncodeToString(res.Plaintext)
		}
		if res.Ciphertext != nil {
			out.Ciphertext = base64.StdEncoding.EncodeToString(res.Ciphertext)
		}
		writeAction(c.w, out)
		return nil
	case "rotate":
		return noContent(a.kms.Rotate(ctx, c.guid, id, kms.RotateInput{Payload: body.Payload, EncryptedNonce: body.EncryptedNonce,
			IV: body.IV, EncryptionAlgorithm: body.EncryptionAlgorithm}))
	case "enable":
		return noContent(a.kms.EnableKey(ctx, c.guid, id))
	case "disable":
		return noContent(a.kms.DisableKey(ctx, c.guid, id))
	case "setKeyForDeletion":
		return noContent(a.kms.SetKeyForDeletion(ctx, c.guid, id))
	case "unsetKeyForDeletion":
		return noContent(a.kms.UnsetKeyForDeletion(ctx, c.guid, id))
	case "sync":
		return noContent(a.kms.SyncKey(ctx, c.guid, id))
	}
	return errs.E(op, errs.Invalid, "INVALID_QUERY_PARAM_ERR",
		"The action must be: wrap, unwrap, rewrap, rotate, enable, disable, restore, setKeyForDeletion, unsetKeyForDeletion or sync").On("query_param", "action")
}

func (a *API) createAlias(c *call) error {
	al, err := a.kms.CreateAlias(c.r.Context(), c.guid, c.r.PathValue("id"), c.r.PathValue("alias"))
	if err != nil {
		return err
	}
	writeCollection(c.w, http.StatusCreated, typeKey, []kms.Alias{al}, nil)
	return nil
}

func (a *API) deleteAlias(c *call) error {
	if err := a.kms.DeleteAlias(c.r.Context(), c.guid, c.r.PathValue("id"), c.r.PathValue("alias")); err != nil {
		return err
	}
	c.w.WriteHeader(http.StatusNoContent)
	return nil
}
