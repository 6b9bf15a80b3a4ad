// Package backupapi serves deployment backups over HTTP in the Cloud
// Databases v5 shapes: POST and GET /v5/ibm/deployments/{id}/backups and
// GET /v5/ibm/backups/{id}, where {id} is a URL-encoded CRN or a GUID.
package backupapi

import (
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/backup"
	"github.com/keyline/keyline/internal/controller/rcapi"
	"github.com/keyline/keyline/internal/httpapi"
)

// API is the HTTP edge of the backup service.
type API struct {
	svc    *backup.Service
	authn  auth.Authenticator
	logger *slog.Logger
}

// New returns the API of svc; callers authenticate with IAM bearer tokens.
func New(svc *backup.Service, authn auth.Authenticator, logger *slog.Logger) *API {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &API{svc: svc, authn: authn, logger: logger}
}

// Register adds the API's routes to mux.
func (a *API) Register(mux *http.ServeMux) {
	mux.Handle("POST /v5/ibm/deployments/{id}/backups", a.handle(a.create))
	mux.Handle("GET /v5/ibm/deployments/{id}/backups", a.handle(a.list))
	mux.Handle("GET /v5/ibm/backups/{id}", a.handle(a.get))
}

func (a *API) create(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if r.ContentLength > 0 {
		// The call takes no options; an empty JSON object is accepted.
		var body struct{}
		if err := httpapi.DecodeJSON(r, &body, 1<<10, false); err != nil {
			return err
		}
	}
	task, err := a.svc.Create(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusAccepted, rcapi.TaskBody(task))
	return nil
}

func (a *API) list(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	bs, err := a.svc.List(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	out := struct {
		Backups []backupJSON `json:"backups"`
	}{Backups: make([]backupJSON, 0, len(bs))}
	for _, b := range bs {
		out.Backups = append(out.Backups, toJSON(b))
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) get(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	b, err := a.svc.Get(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct {
		Backup backupJSON `json:"backup"`
	}{toJSON(b)})
	return nil
}

// backupJSON is Cloud Databases' Backup.
type backupJSON struct {
	ID             string     `json:"id"`
	DeploymentID   string     `json:"deployment_id"`
	Type           string     `json:"type"`
	Status         string     `json:"status"`
	IsDownloadable bool       `json:"is_downloadable"`
	IsRestorable   bool       `json:"is_restorable"`
	CreatedAt      time.Time  `json:"created_at"`
	CompletedAt    *time.Time `json:"completed_at,omitempty"`
	SizeBytes      int64      `json:"size_bytes,omitempty"`
	KeyCRN         string     `json:"encryption_key_crn,omitempty"` // the root key that wraps its data key
	TaskID         string     `json:"task_id,omitempty"`
	Reason         string     `json:"reason,omitempty"`
}

func toJSON(v backup.View) backupJSON {
	out := backupJSON{ID: v.CRN, DeploymentID: v.DeploymentCRN, Type: v.Type, Status: v.Status, IsRestorable: v.Restorable,
		CreatedAt: v.CreatedAt, SizeBytes: v.Size, KeyCRN: v.KeyCRN, TaskID: v.TaskID, Reason: v.Reason}
	if !v.FinishedAt.IsZero() {
		t := v.FinishedAt
		out.CompletedAt = &t
	}
	return out
}

// handle authenticates the caller, runs h, and writes its error in the
// platform error format.
func (a *API) handle(h httpapi.Handler) http.Handler {
	return httpapi.Platform(a.authn, a.logger, "backups", h)
}
