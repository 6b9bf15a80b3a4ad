package archive_test

import (
	"context"
	"testing"

	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/backup/volume/dir"
	"github.com/keyline/keyline/internal/backup/volume/volumetest"
)

// volumes are the backends every backup test runs on.
func volumes(t *testing.T) map[string]func(t *testing.T) volume.Volume {
	return map[string]func(t *testing.T) volume.Volume{
		"dir": func(t *testing.T) volume.Volume {
			v, err := dir.New(tempDir(t, "volume"))
			if err != nil {
				t.Fatal(err)
			}
			return v
		},
		"s3": func(t *testing.T) volume.Volume {
			return volumetest.StartS3(t).NewBucketVolume(t, "keyline-backups", "deployments/d1/")
		},
	}
}

func TestRestoreReproducesStoreAtSameOffsets(t *testing.T) {
	for name, newVolume := range volumes(t) {
		t.Run(name, func(t *testing.T) {
			v := newVolume(t)
			src := openStore(t, tempDir(t, "src"), storeOptions("dep-1"))
			fillStore(t, src, 120, nil)
			_, parts := image(t, src)
			if p := parts["orders-1"]; p.Start <= p.Batches[0].Meta.BaseOffset {
				t.Fatalf("orders-1 should start inside its first batch: %d, %+v", p.Start, p.Batches[0].Meta)
			}
			if p := parts["trimmed-0"]; p.Start == 0 || p.Start != p.End {
				t.Fatalf("trimmed-0 should be empty at a start > 0: [%d,%d)", p.Start, p.End)
			}
			h := backupTo(t, src, v, "2026/11/27/b1.kbk", archive.WriterOptions{ChunkSize: 100_000})
			if h.WrappedDEK.KeyCRN != testKeyCRN || h.BackupID == "" {
				t.Fatalf("header = %+v", h)
			}

			obj, err := v.Open(context.Background(), "2026/11/27/b1.kbk")
			if err != nil {
				t.Fatal(err)
			}
			defer obj.Close()
			target := tempDir(t, "restored")
			opts := storeOptions("dep-2") // a new deployment with its own DEK
			if err := restoreFrom(t, obj, target, opts); err != nil {
				t.Fatal(err)
			}
			sameImage(t, src, openStore(t, target, opts))
		})
	}
}
