package httpapi

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
)

// PlatformError is IBM Cloud's platform error body, used by the Resource
// Controller, the tasks and backups APIs and the Activity Tracker API.
type PlatformError struct {
	Message    string              `json:"message"`
	StatusCode int                 `json:"status_code"`
	Errors     []PlatformErrorItem `json:"errors"`
	Trace      string              `json:"trace"`
}

// PlatformErrorItem is one error of a PlatformError.
type PlatformErrorItem struct {
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Target  *errs.Target `json:"target,omitempty"`
}

// WritePlatformError answers err in the platform format. Unclassified and
// internal errors are logged with the correlation id and shown generically.
func WritePlatformError(w http.ResponseWriter, r *http.Request, logger *slog.Logger, component string, err error) {
	e := errs.As(err)
	if e == nil || e.Kind == errs.Internal || e.Kind == errs.Other {
		if logger != nil {
			logger.Error(component, "path", r.URL.Path, "err", err, "correlation_id", CorrelationID(r.Context()))
		}
		if e == nil || e.Kind == errs.Other {
			e = errs.Internalf(component, err)
		}
	}
	status := e.Kind.Status()
	code := e.Code
	if code == "" {
		code = e.Kind.String()
	}
	WriteJSON(w, status, PlatformError{Message: e.Msg, StatusCode: status,
		Errors: []PlatformErrorItem{{Code: code, Message: e.Msg, Target: e.Target}}, Trace: CorrelationID(r.Context())})
}

// Handler is an API handler that returns its error instead of writing it.
type Handler func(ctx context.Context, w http.ResponseWriter, r *http.Request) error

// Platform authenticates the bearer token, runs h with the principal in its
// context, and writes any error in the platform format.
func Platform(authn auth.Authenticator, logger *slog.Logger, component string, h Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, _, err := Authenticate(r, authn)
		if err == nil {
			err = h(ctx, w, r.WithContext(ctx))
		}
		if err != nil {
			WritePlatformError(w, r, logger, component, err)
		}
	})
}
