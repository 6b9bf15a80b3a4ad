package backup_test

import (
	"context"
	"testing"

	"github.com/keyline/keyline/internal/backup"
	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/errs"
)

// TestDeploymentVolumesAreSeparate: two deployments on the same storage
// see only their own backups, on either kind of volume.
func TestDeploymentVolumesAreSeparate(t *testing.T) {
	ctx := context.Background()
	configs := map[string]func(t *testing.T) backup.VolumeConfig{
		"dir": func(t *testing.T) backup.VolumeConfig {
			return backup.VolumeConfig{Kind: "dir", DataDir: t.TempDir()}
		},
		"s3": func(t *testing.T) backup.VolumeConfig {
			srv := volumetest.StartS3(t)
			return backup.VolumeConfig{Kind: "s3", S3: srv.Config("keyline-backups", "")}
		},
	}
	for kind, newConfig := range configs {
		t.Run(kind, func(t *testing.T) {
			cfg := newConfig(t)
			a, err := backup.OpenVolume(ctx, cfg, "dep-a")
			if err != nil {
				t.Fatal(err)
			}
			b, err := backup.OpenVolume(ctx, cfg, "dep-b")
			if err != nil {
				t.Fatal(err)
			}
			volumetest.Put(t, a, "b1", []byte("of a"))
			volumetest.Put(t, b, "b1", []byte("of b"))
			if got := volumetest.Get(t, a, "b1"); string(got) != "of a" {
				t.Fatalf("deployment a reads %q", got)
			}
			if err := b.Delete(ctx, "b1"); err != nil {
				t.Fatal(err)
			}
			if l, _ := a.List(ctx, ""); len(l) != 1 {
				t.Fatalf("deleting b's backup changed a's: %+v", l)
			}
		})
	}
}

func TestOpenVolumeRefusesBadConfig(t *testing.T) {
	ctx := context.Background()
	for name, c := range map[string]struct {
		cfg        backup.VolumeConfig
		deployment string
	}{
		"path as deployment":  {backup.VolumeConfig{DataDir: t.TempDir()}, "../other"},
		"empty deployment":    {backup.VolumeConfig{DataDir: t.TempDir()}, ""},
		"unknown kind":        {backup.VolumeConfig{Kind: "tape", DataDir: t.TempDir()}, "d"},
		"dir without datadir": {backup.VolumeConfig{Kind: "dir"}, "d"},
		"s3 without bucket":   {backup.VolumeConfig{Kind: "s3"}, "d"},
	} {
		if _, err := backup.OpenVolume(ctx, c.cfg, c.deployment); errs.KindOf(err) != errs.Invalid {
			t.Errorf("%s: OpenVolume = %v, want Invalid", name, err)
		}
	}
}
