package dir_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/backup/volume/dir"
	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/errs"
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

func TestDirVolumeRefusesNestedNames(t *testing.T) {
	ctx := context.Background()
	v, err := dir.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	volumetest.Put(t, v, "a", []byte("x"))
	volumetest.Put(t, v, "b/c", []byte("y"))
	for _, name := range []string{"a/b", "b"} {
		if _, err := v.Create(ctx, name); errs.KindOf(err) != errs.Conflict {
			t.Errorf("Create(%q) = %v, want Conflict", name, err)
		}
	}
}
