package dir_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/backup/volume/dir"
	"github.com/keyline/keyline/internal/backup/volume/volumetest"
)

func TestDirVolumeConformance(t *testing.T) {
	volumetest.Conformance(t, func(t *testing.T) volume.Volume {
		v, err := dir.New(filepath.Join(t.TempDir(), "deployments", "d1"))
		if err != nil {
			t.Fatal(err)
		}
		return v
	})
}

func TestDirVolumeRemovesTemporaryFilesOnOpen(t *testing.T) {
	root := t.TempDir()
	v, err := dir.New(root)
	if err != nil {
		t.Fatal(err)
	}
	w, err := v.Create(context.Background(), "a/b")
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("left by a crash"))
	// No Close: as if the process died. Reopening cleans up.
	if _, err := dir.New(root); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Join(root, "a"))
	if len(entries) != 0 {
		t.Fatalf("temporary files survived: %v", entries)
	}
}
