// Package kpapi serves the Key Protect v2 REST API (/api/v2/...) over the
// KMS service, with Key Protect's bodies, status codes and error format, so
// that the official clients work against Keyline unchanged.
package kpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/kms"
)

// Collection types of Key Protect bodies.
const (
	typeKey          = "application/vnd.ibm.kms.key+json"
	typePolicy       = "application/vnd.ibm.kms.policy+json"
	typeRegistration = "application/vnd.ibm.kms.registration+json"
	typeError        = "application/vnd.ibm.kms.error+json"
	typeVersion      = "application/vnd.ibm.kms.key.version+json"
	typeKeyRing      = "application/vnd.ibm.kms.key_ring+json"
	typeAllowedIP    = "application/vnd.ibm.kms.allowed_ip_metadata+json"
	moreInfo         = "https://cloud.ibm.com/apidocs/key-protect"
)

// Request body limits: key material is at most 7,500 bytes (10 KB in
// base64); nothing else in the API comes close to 64 KiB.
const maxBody = 64 << 10

// API is the Key Protect HTTP API.
type API struct {
	kms   *kms.Service
	authn auth.Authenticator
	log   *slog.Logger
}

// New returns the API over svc; callers authenticate with bearer tokens
// verified by authn.
func New(svc *kms.Service, authn auth.Authenticator, logger *slog.Logger) *API {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{kms: svc, authn: authn, log: logger}
}

// route is one endpoint: its audit action (for refusals before the service
// is reached) and the phrase of its error messages ("Key could not be wrapped").
type route struct {
	action, phrase string
	fn             func(c *call) error
}

// refined is the audit action and phrase of a request on rt as precisely as
// the request line tells it: a key action is named by its path or query.
func (rt route) refined(r *http.Request) (action, phrase string) {
	if rt.action != actionKeyDefault {
		return rt.action, rt.phrase
	}
	act := r.PathValue("action")
	if act == "" {
		act = r.URL.Query().Get("action")
	}
	if act == "restore" {
		return auth.KMSKeyRestore, "Key could not be restored"
	}
	if ka, ok := keyActions[act]; ok {
		return ka.action, ka.phrase
	}
	return rt.action, rt.phrase
}

// actionKeyDefault is the audit action of a key action request until the
// action is known.
const actionKeyDefault = "kms.secrets.default"

// call is one authenticated request.
type call struct {
	w      http.ResponseWriter
	r      *http.Request
	guid   string
	action string // the audit action, refined by handlers that serve several
	phrase string // "Key could not be wrapped", likewise
}

// Register adds the API's routes to mux. The server wraps the mux in
// httpapi.Middleware, which gives each request its correlation id.
func (a *API) Register(mux *http.ServeMux) {
	const p = "/api/v2/"
	h := func(pattern string, rt route) { mux.Handle(pattern, a.handler(rt, true)) }
	// /keys/registrations before /keys/{id}: "registrations" is not an alias.
	h("GET "+p+"keys/registrations", route{auth.KMSRegistrationList, "Registrations could not be listed", a.listAllRegistrations})
	h("POST "+p+"keys", route{auth.KMSKeyCreate, "Key could not be created", a.createKey(false)})
	h("POST "+p+"keys_with_policy_overrides", route{auth.KMSKeyCreate, "Key could not be created", a.createKey(true)})
	h("GET "+p+"keys", route{auth.KMSKeyList, "Keys could not be listed", a.listKeys})
	h("HEAD "+p+"keys", route{auth.KMSKeyHead, "Keys could not be counted", a.headKeys})
	h("GET "+p+"keys/{id}", route{auth.KMSKeyRead, "Key could not be retrieved", a.getKey})
	h("GET "+p+"keys/{id}/metadata", route{auth.KMSKeyReadMetadata, "Key metadata could not be retrieved", a.getKeyMetadata})
	h("PATCH "+p+"keys/{id}", route{auth.KMSKeyPatch, "Key could not be updated", a.patchKey})
	h("DELETE "+p+"keys/{id}", route{auth.KMSKeyDelete, "Key could not be deleted", a.deleteKey})
	h("DELETE "+p+"keys/{id}/purge", route{auth.KMSKeyPurge, "Key could not be purged", a.purgeKey})
	h("POST "+p+"keys/{id}/restore", route{auth.KMSKeyRestore, "Key could not be restored", a.restoreKey})
	h("GET "+p+"keys/{id}/versions", route{auth.KMSKeyVersionsList, "Key versions could not be listed", a.listVersions})
	h("POST "+p+"keys/{id}/actions/{action}", route{actionKeyDefault, "Key action could not be performed", a.keyActionFromPath})
	h("POST "+p+"keys/{id}", route{actionKeyDefault, "Key action could not be performed", a.keyActionFromQuery})
	h("GET "+p+"keys/{id}/policies", route{auth.KMSPoliciesRead, "Policies could not be retrieved", a.getPolicies})
	h("PUT "+p+"keys/{id}/policies", route{auth.KMSPoliciesWrite, "Policies could not be set", a.putPolicies})
	h("GET "+p+"instance/policies", route{auth.KMSInstancePolRead, "Instance policies could not be retrieved", a.getInstancePolicies})
	h("PUT "+p+"instance/policies", route{auth.KMSInstancePolWrite, "Instance policies could not be set", a.putInstancePolicies})
	// Key Protect documents this one endpoint as bypassing the allowedIP
	// policy, so that a client outside it can still learn the port to use.
	mux.Handle("GET "+p+"instance/allowed_ip_port", a.handler(route{"kms.instance-allowed-ip-port.read", "Allowed IP port could not be retrieved", a.allowedIPPort}, false))
	h("POST "+p+"import_token", route{auth.KMSImportTokenCreate, "Import token could not be created", a.createImportToken})
	h("GET "+p+"import_token", route{auth.KMSImportTokenRead, "Import token could not be retrieved", a.getImportToken})
	h("GET "+p+"keys/{id}/registrations", route{auth.KMSRegistrationList, "Registrations could not be listed", a.listKeyRegistrations})
	h("POST "+p+"keys/{id}/registrations/{crn}", route{auth.KMSRegistrationCreate, "Registration could not be created", a.writeRegistration})
	h("PUT "+p+"keys/{id}/registrations/{crn}", route{auth.KMSRegistrationWrite, "Registration could not be replaced", a.writeRegistration})
	h("PATCH "+p+"keys/{id}/registrations/{crn}", route{auth.KMSRegistrationMerge, "Registration could not be updated", a.writeRegistration})
	h("DELETE "+p+"keys/{id}/registrations/{crn}", route{auth.KMSRegistrationDelete, "Registration could not be deleted", a.deleteRegistration})
	h("POST "+p+"event_ack", route{auth.KMSEventAck, "Event could not be acknowledged", a.eventAck})
	h("POST "+p+"keys/{id}/aliases/{alias}", route{auth.KMSAliasCreate, "Alias could not be created", a.createAlias})
	h("DELETE "+p+"keys/{id}/aliases/{alias}", route{auth.KMSAliasDelete, "Alias could not be deleted", a.deleteAlias})
	h("GET "+p+"key_rings", route{auth.KMSKeyRingList, "Key rings could not be listed", a.listKeyRings})
	h("POST "+p+"key_rings/{ring}", route{auth.KMSKeyRingCreate, "Key ring could not be created", a.createKeyRing})
	h("DELETE "+p+"key_rings/{ring}", route{auth.KMSKeyRingDelete, "Key ring could not be deleted", a.deleteKeyRing})
	mux.Handle(p, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := errs.E("kpapi", errs.NotExist, "NOT_FOUND_ERR", "No Key Protect endpoint has this method and path")
		ctx := r.Context()
		if actx, _, aerr := httpapi.Authenticate(r, a.authn); aerr == nil {
			ctx = actx
		}
		a.kms.RecordRefusal(ctx, actionKeyDefault, strings.TrimSpace(r.Header.Get("Bluemix-Instance")), err)
		writeError(w, "Request could not be processed", err)
	}))
}

// handler serves rt. Every call carries its client's address (the TCP peer,
// never a forwarding header) into the service, which enforces the
// instance's allowedIP policy with it; with admit, a call from outside the
// policy is refused here already, before its body is read, so that any
// request from there gets the same 401.
func (a *API) handler(rt route, admit bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		guid := strings.TrimSpace(r.Header.Get("Bluemix-Instance"))
		ctx, _, err := httpapi.Authenticate(r, a.authn)
		if err != nil {
			e := errs.E("kpapi", errs.Unauthenticated, "UNAUTHORIZED_ERR", "The user does not have access to the specified resource").Because(err)
			a.kms.RecordRefusal(r.Context(), rt.action, guid, e)
			writeError(w, rt.phrase, e)
			return
		}
		ctx = kms.WithClientAddr(ctx, r.RemoteAddr)
		if admit {
			action, phrase := rt.refined(r)
			if err := a.kms.AdmitClient(ctx, action, guid); err != nil {
				writeError(w, phrase, err)
				return
			}
		}
		r = r.WithContext(ctx)
		c := &call{w: w, r: r, guid: guid, action: rt.action, phrase: rt.phrase}
		if err := rt.fn(c); err != nil {
			if errs.KindOf(err) == errs.Other || errs.KindOf(err) == errs.Internal {
				a.log.Error("kpapi: request failed", "path", r.URL.Path, "err", err)
			}
			// The service records what it refuses; requests refused here,
			// before reaching it (bad bodies, bad parameters), are recorded too.
			if e := errs.As(err); e == nil || !strings.HasPrefix(e.Op, "kms.") {
				a.kms.RecordRefusal(r.Context(), c.action, guid, err)
			}
			writeError(w, c.phrase, err)
		}
	})
}

// errorBody is Key Protect's error envelope.
type errorBody struct {
	Metadata  metadata        `json:"metadata"`
	Resources []errorResource `json:"resources"`
}

type errorResource struct {
	ErrorMsg string   `json:"errorMsg"`
	Reasons  []reason `json:"reasons,omitempty"`
}

type reason struct {
	Code     string       `json:"code"`
	Message  string       `json:"message"`
	Status   int          `json:"status"`
	MoreInfo string       `json:"moreInfo"`
	Target   *errs.Target `json:"target,omitempty"`
}

// writeError writes err in Key Protect's error format. Only the error's
// caller-safe message is shown; causes are never.
func writeError(w http.ResponseWriter, phrase string, err error) {
	e := errs.As(err)
	if e == nil || e.Kind == errs.Other {
		e = errs.Internalf("kpapi", err)
	}
	status := e.Kind.Status()
	code := e.Code
	if code == "" {
		code = "INTERNAL_ERR"
	}
	msg := http.StatusText(status) + ": " + phrase + ": Please see 'reasons' for more details (" + code + ")"
	if status == http.StatusUnauthorized {
		msg = "Unauthorized: The user does not have access to the specified resource"
	}
	body := errorBody{Metadata: metadata{CollectionType: typeError, CollectionTotal: 1}, Resources: []errorResource{{
		ErrorMsg: msg, Reasons: []reason{{Code: code, Message: e.Msg, Status: status, MoreInfo: moreInfo, Target: e.Target}}}}}
	httpapi.WriteJSON(w, status, body)
}

// metadata is the metadata of a collection.
type metadata struct {
	CollectionType  string `json:"collectionType"`
	CollectionTotal int    `json:"collectionTotal"`
	TotalCount      *int   `json:"totalCount,omitempty"`
}

// collection is a Key Protect collection body; an empty one has no resources.
type collection struct {
	Metadata  metadata `json:"metadata"`
	Resources any      `json:"resources,omitempty"`
}

func writeCollection[T any](w http.ResponseWriter, status int, typ string, items []T, total *int) {
	c := collection{Metadata: metadata{CollectionType: typ, CollectionTotal: len(items), TotalCount: total}}
	if len(items) > 0 {
		c.Resources = items
	}
	httpapi.WriteJSON(w, status, c)
}

// inMetadata is the metadata of a request collection.
type inMetadata struct {
	CollectionType  string `json:"collectionType"`
	CollectionTotal *int   `json:"collectionTotal"`
}

type inCollection[T any] struct {
	Metadata  *inMetadata `json:"metadata"`
	Resources []T         `json:"resources"`
}

// decodeCollection reads a request collection of between min and max
// resources whose collectionTotal matches.
func decodeCollection[T any](r *http.Request, min, max int) ([]T, error) {
	const op = "kpapi.decodeCollection"
	var c inCollection[T]
	if err := decodeBody(r, &c, true); err != nil {
		return nil, err
	}
	if c.Metadata == nil || c.Metadata.CollectionTotal == nil || c.Metadata.CollectionType == "" {
		return nil, errs.E(op, errs.Invalid, "BAD_BODY_ERR", "Invalid body data was passed: metadata with collectionType and collectionTotal is required").On("field", "metadata")
	}
	if *c.Metadata.CollectionTotal != len(c.Resources) {
		return nil, errs.E(op, errs.Invalid, "COLLECTION_TOTAL_MISMATCH_ERR", "Collection total does not match number of resources").On("field", "collectionTotal")
	}
	if len(c.Resources) < min || len(c.Resources) > max {
		return nil, errs.Ef(op, errs.Invalid, "BAD_BODY_ERR", "Invalid body data was passed: between %d and %d resources are allowed", min, max).On("field", "resources")
	}
	return c.Resources, nil
}

// decodeBody decodes a JSON body (field names in any case; unknown fields
// refused). An empty or null body is an error only when required.
func decodeBody(r *http.Request, v any, required bool) error {
	if err := checkContentType(r); err != nil {
		return err
	}
	body, err := httpapi.ReadJSON(r, maxBody, required)
	if err == nil && body != nil {
		if ar, ok := v.(*actionRequest); ok && decodeActionFast(body, ar) {
			return nil
		}
		err = httpapi.DecodeJSONBytes(body, v)
	}
	if e := errs.As(err); e != nil && e.Kind == errs.TooLarge {
		e.Code = "BODY_TOO_LARGE_ERR"
	}
	return err
}

// checkContentType refuses a body declared as anything but JSON, as Key
// Protect does: application/json or one of its own JSON types
// (application/vnd.ibm.kms.key+json and the like). No Content-Type at all
// is taken as JSON, since IBM's Go client never sends one.
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && (mt == "application/json" || strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return nil
	}
	return errs.E("kpapi", errs.UnsupportedMedia, "UNSUPPORTED_MEDIA_TYPE_ERR",
		"The Content-Type must be application/json or application/vnd.ibm.kms.key+json").On("header", "Content-Type")
}

// preferMinimal reports whether the client asked for no body back.
func preferMinimal(r *http.Request) bool {
	return strings.Contains(strings.ToLower(r.Header.Get("Prefer")), "return=minimal")
}

func preferRepresentation(r *http.Request) bool {
	return strings.Contains(strings.ToLower(r.Header.Get("Prefer")), "return=representation")
}

// queryInt reads an integer query parameter within [min, max].
func queryInt(r *http.Request, name string, def, min, max int) (int, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < min || n > max {
		return 0, errs.Ef("kpapi", errs.Invalid, "INVALID_QUERY_PARAM_ERR", "The query_param '%s' must be: an integer between %d and %d", name, min, max).On("query_param", name)
	}
	return n, nil
}

// queryBool reads a boolean query parameter (nil when absent).
func queryBool(r *http.Request, name string) (*bool, error) {
	switch s := r.URL.Query().Get(name); strings.ToLower(s) {
	case "":
		return nil, nil
	case "true":
		b := true
		return &b, nil
	case "false":
		b := false
		return &b, nil
	}
	return nil, errs.Ef("kpapi", errs.Invalid, "INVALID_QUERY_PARAM_ERR", "The query_param '%s' must be: true or false", name).On("query_param", name)
}

// paging reads limit, offset and totalCount.
func paging(r *http.Request) (limit, offset int, total bool, err error) {
	if limit, err = queryInt(r, "limit", 200, 1, 5000); err != nil {
		return
	}
	if offset, err = queryInt(r, "offset", 0, 0, 1<<31-1); err != nil {
		return
	}
	t, err := queryBool(r, "totalCount")
	return limit, offset, t != nil && *t, err
}

func totalIf(want bool, n int) *int {
	if !want {
		return nil
	}
	return &n
}

// drainBody makes sure a request that takes no body has none worth reading.
func drainBody(r *http.Request) error {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return errs.E("kpapi", errs.Invalid, "BAD_BODY_ERR", "The request body could not be read")
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 || string(b) == "null" || string(b) == "{}" {
		return nil
	}
	if len(b) > maxBody {
		return errs.E("kpapi", errs.TooLarge, "BODY_TOO_LARGE_ERR", "The request body is too large")
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return errs.E("kpapi", errs.Invalid, "BAD_BODY_ERR", "The request body is not valid JSON")
	}
	return nil
}
