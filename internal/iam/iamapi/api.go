// Package iamapi serves IAM over HTTP in IBM Cloud's shapes: the token
// endpoint and JWKS, IAM Identity (API keys, service IDs), user management,
// and policy management v1 (access policies and authorizations).
package iamapi

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/iam"
)

// API is the HTTP edge of the IAM service.
type API struct {
	svc    *iam.Service
	logger *slog.Logger
}

// New returns the IAM HTTP API over svc.
func New(svc *iam.Service, logger *slog.Logger) *API {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{svc: svc, logger: logger}
}

// Register adds IAM's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.HandleFunc("POST /identity/token", a.token)
	mux.HandleFunc("POST /oidc/token", a.token)
	mux.HandleFunc("GET /identity/keys", a.keys)

	mux.HandleFunc("POST /v1/apikeys", a.identity(a.createAPIKey))
	mux.HandleFunc("GET /v1/apikeys", a.identity(a.listAPIKeys))
	mux.HandleFunc("GET /v1/apikeys/details", a.identity(a.apiKeyDetails))
	mux.HandleFunc("GET /v1/apikeys/{id}", a.identity(a.getAPIKey))
	mux.HandleFunc("DELETE /v1/apikeys/{id}", a.identity(a.deleteAPIKey))

	mux.HandleFunc("POST /v1/serviceids", a.identity(a.createServiceID))
	mux.HandleFunc("GET /v1/serviceids", a.identity(a.listServiceIDs))
	mux.HandleFunc("GET /v1/serviceids/{id}", a.identity(a.getServiceID))
	mux.HandleFunc("PUT /v1/serviceids/{id}", a.identity(a.updateServiceID))
	mux.HandleFunc("DELETE /v1/serviceids/{id}", a.identity(a.deleteServiceID))

	mux.HandleFunc("POST /v2/accounts/{account_id}/users", a.identity(a.inviteUsers))
	mux.HandleFunc("GET /v2/accounts/{account_id}/users", a.identity(a.listUsers))
	mux.HandleFunc("DELETE /v2/accounts/{account_id}/users/{iam_id}", a.identity(a.removeUser))

	mux.HandleFunc("POST /v1/policies", a.policies(a.createPolicy))
	mux.HandleFunc("GET /v1/policies", a.policies(a.listPolicies))
	mux.HandleFunc("GET /v1/policies/{id}", a.policies(a.getPolicy))
	mux.HandleFunc("PUT /v1/policies/{id}", a.policies(a.updatePolicy))
	mux.HandleFunc("PATCH /v1/policies/{id}", a.policies(a.patchPolicy))
	mux.HandleFunc("DELETE /v1/policies/{id}", a.policies(a.deletePolicy))
	mux.HandleFunc("GET /v2/roles", a.policies(a.roles))
}

// handler is an authenticated handler: ctx carries the caller.
type handler func(ctx context.Context, w http.ResponseWriter, r *http.Request) error

// identity wraps a handler of the IAM Identity and user management APIs,
// whose errors have the {"errorCode","errorMessage","context"} shape.
func (a *API) identity(h handler) http.HandlerFunc {
	return a.authenticated(h, a.writeIdentityError)
}

// policies wraps a handler of the policy management API, whose errors have
// the {"trace","errors":[{"code","message"}],"status_code"} shape.
func (a *API) policies(h handler) http.HandlerFunc {
	return a.authenticated(h, a.writePolicyError)
}

func (a *API) authenticated(h handler, writeErr func(http.ResponseWriter, *http.Request, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, _, err := httpapi.Authenticate(r, a.svc)
		if err == nil {
			err = h(ctx, w, r)
		}
		if err != nil {
			writeErr(w, r, err)
		}
	}
}

// identityError is IAM Identity's error body.
type identityError struct {
	ErrorCode    string       `json:"errorCode"`
	ErrorMessage string       `json:"errorMessage"`
	Context      errorContext `json:"context"`
}

type errorContext struct {
	RequestID string `json:"requestId"`
}

func (a *API) writeIdentityError(w http.ResponseWriter, r *http.Request, err error) {
	e := a.edgeError(r, err)
	code := e.Code
	switch code {
	case "BAD_BODY_ERR", "NO_BODY_ERR":
		code = "BXNIM0109E"
	case "UNAUTHORIZED_ERR":
		code = "BXNIM0308E"
	}
	httpapi.WriteJSON(w, e.Kind.Status(), identityError{ErrorCode: code, ErrorMessage: e.Msg,
		Context: errorContext{RequestID: httpapi.CorrelationID(r.Context())}})
}

// policyError is the policy management API's error body.
type policyError struct {
	Trace      string        `json:"trace"`
	Errors     []policyIssue `json:"errors"`
	StatusCode int           `json:"status_code"`
}

type policyIssue struct {
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Target  *errs.Target `json:"target,omitempty"`
}

func (a *API) writePolicyError(w http.ResponseWriter, r *http.Request, err error) {
	e := a.edgeError(r, err)
	status, code := e.Kind.Status(), e.Code
	switch code {
	case "BAD_BODY_ERR", "NO_BODY_ERR":
		code = "invalid_body"
	case "BODY_TOO_LARGE_ERR":
		code = "request_too_large"
	case "UNAUTHORIZED_ERR", "BXNIM0407E", "BXNIM0308E":
		code = "invalid_token"
	case "precondition_failed":
		status = http.StatusPreconditionFailed
	}
	httpapi.WriteJSON(w, status, policyError{Trace: httpapi.CorrelationID(r.Context()),
		Errors: []policyIssue{{Code: code, Message: e.Msg, Target: e.Target}}, StatusCode: status})
}

// edgeError turns any error into a Keyline error fit to show, logging causes
// that are not (never their values: errors carry no secrets).
func (a *API) edgeError(r *http.Request, err error) *errs.Error {
	e := errs.As(err)
	if e == nil || e.Kind == errs.Internal || e.Kind == errs.Other {
		a.logger.LogAttrs(r.Context(), slog.LevelError, "iam request failed", slog.String("path", r.URL.Path),
			slog.String("correlation_id", httpapi.CorrelationID(r.Context())), slog.String("error", err.Error()))
		return errs.E("iamapi", errs.Internal, "internal_error", "An internal error occurred")
	}
	return e
}

// queryInt reads an optional integer query parameter.
func queryInt(r *http.Request, name, code string) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, errs.Ef("iamapi", errs.Invalid, code, "The query parameter %s must be a number", name).On("query_param", name)
	}
	return n, nil
}

// baseURL is how the client reached us, for hrefs.
func baseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}
