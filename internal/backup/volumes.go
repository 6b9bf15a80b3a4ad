// Package backup is Keyline's backups of Event Streams deployments: where
// they are kept (package volume and its backends), their sealed format
// (package archive), and the service that takes and restores them.
package backup

import (
	"context"
	"path/filepath"
	"regexp"

	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/backup/volume/dir"
	"github.com/keyline/keyline/internal/backup/volume/s3"
	"github.com/keyline/keyline/internal/errs"
)

// VolumeConfig chooses where backups live: Kind "dir" (the default) keeps
// them under DataDir/backups, Kind "s3" in an S3-compatible bucket.
type VolumeConfig struct {
	Kind    string // "dir" or "s3"
	DataDir string // dir: the server's data directory
	S3      s3.Config
}

// deploymentID is what may name a deployment's volume: a GUID or similar
// identifier, never a path.
var deploymentID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

// OpenVolume opens the backup volume of one deployment: its own directory
// (DataDir/backups/deployments/<id>) or its own prefix in the bucket
// (deployments/<id>/), so that deleting a deployment's backups, listing
// them or a mistake in one deployment never touches another's.
func OpenVolume(ctx context.Context, cfg VolumeConfig, deployment string) (volume.Volume, error) {
	const op = "backup.OpenVolume"
	if !deploymentID.MatchString(deployment) {
		return nil, errs.E(op, errs.Invalid, "DEPLOYMENT_ID_INVALID", "A deployment id is 1 to 128 letters, digits, '_' or '-'")
	}
	prefix := "deployments/" + deployment + "/"
	switch cfg.Kind {
	case "", "dir":
		if cfg.DataDir == "" {
			return nil, errs.E(op, errs.Invalid, "VOLUME_CONFIG_INVALID", "A directory volume needs the data directory")
		}
		return dir.New(filepath.Join(cfg.DataDir, "backups", filepath.FromSlash(prefix)))
	case "s3":
		c := cfg.S3
		c.Prefix += prefix
		v, err := s3.New(c)
		if err != nil {
			return nil, err
		}
		if err := v.EnsureBucket(ctx); err != nil {
			return nil, err
		}
		return v, nil
	}
	return nil, errs.Ef(op, errs.Invalid, "VOLUME_CONFIG_INVALID", "Unknown backup volume kind %q (want dir or s3)", cfg.Kind)
}
