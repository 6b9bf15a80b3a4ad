package server

import (
	"context"
	"errors"

	"github.com/keyline/keyline/internal/backup"
	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/backup/backupapi"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/streams"
)

// restorer is the backup service as the Restorer of deployments. It is
// made before either service and bound once both exist: deployments
// restore through backups, and backups read deployments.
type restorer struct{ svc *backup.Service }

func (r *restorer) RestoreBackup(ctx context.Context, inst streams.Instance, backupID string, dst archive.Target) error {
	if r.svc == nil {
		return errs.E("server.RestoreBackup", errs.Unavailable, "BACKUPS_UNAVAILABLE", "Backups are not available yet: try again")
	}
	return r.svc.RestoreBackup(ctx, inst, backupID, dst)
}

// wireBackups builds the backup service on the deployments and serves its
// API.
func (s *Server) wireBackups(ctx context.Context, iamSvc *iam.Service, keys streams.KeyService, ctl *controller.Controller, st *streams.Service, r *restorer) (*backup.Service, error) {
	vols := s.cfg.Backups
	if vols.Kind == "" {
		vols.Kind = "dir"
	}
	if vols.DataDir == "" {
		vols.DataDir = s.cfg.DataDir
	}
	svc, err := backup.New(ctx, backup.Config{
		DB: s.db, Audit: s.Audit, Clock: s.cfg.Clock, Logger: s.cfg.Logger, Volumes: vols,
		Keys: keys, Delegation: IAMIdentity(iamSvc), Deployments: st, Controller: ctl,
		Authorizer: iamSvc, MasterKey: s.master,
	})
	if err != nil {
		return nil, err
	}
	if vols.Kind == "s3" {
		// Fail at start, not at the first backup, when the bucket is unreachable.
		if _, err := backup.OpenVolume(ctx, vols, "keyline-check"); err != nil {
			return nil, errors.Join(errs.E("server.wireBackups", errs.Invalid, "BACKUP_VOLUME_UNAVAILABLE", "The S3 backup bucket cannot be used: check the endpoint, bucket and credentials"), err)
		}
	}
	r.svc = svc
	backupapi.New(svc, iamSvc, s.cfg.Logger).Register(s.mux)
	return svc, nil
}
