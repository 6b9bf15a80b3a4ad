package s3_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/backup/volume/s3"
	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/errs"
)

func TestS3VolumeConformance(t *testing.T) {
	srv := volumetest.StartS3(t)
	n := 0
	volumetest.Conformance(t, func(t *testing.T) volume.Volume {
		n++
		// Each case gets its own deployment prefix in one bucket, as
		// deployments share a bucket in production.
		return srv.NewBucketVolume(t, "keyline-backups", fmt.Sprintf("deployments/d%d/", n))
	})
}

func TestS3VolumeRefusesWrongCredentials(t *testing.T) {
	srv := volumetest.StartS3(t)
	srv.NewBucketVolume(t, "keyline-backups", "")
	cfg := srv.Config("keyline-backups", "")
	cfg.SecretKey = "not-the-secret"
	v, err := s3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.List(context.Background(), "")
	if e := errs.As(err); e == nil || e.Code != "STORAGE_ACCESS_DENIED" {
		t.Fatalf("List with a wrong secret = %v, want STORAGE_ACCESS_DENIED", err)
	}
}
