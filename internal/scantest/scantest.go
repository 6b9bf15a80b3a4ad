// Package scantest looks through what a test left on disk for bytes that
// must not be there in plain form (record data, keys).
package scantest

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// FilesHolding counts the regular files under dir that hold b. A file
// deleted between being listed and read (an object store's garbage
// collection, say) is skipped.
func FilesHolding(t testing.TB, dir string, b []byte) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		if bytes.Contains(data, b) {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
