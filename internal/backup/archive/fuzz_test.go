package archive_test

import (
	"bytes"
	"context"
	"io"
	"testing"

	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/errs"
)

// FuzzReader feeds arbitrary files to the reader: it must end every one
// with io.EOF or an errs value, and never panic or hang.
func FuzzReader(f *testing.F) {
	src := openStore(f, f.TempDir(), storeOptions("dep-1"))
	fillStore(f, src, 4, []byte("marker"))
	good := backupBytes(f, src, 4<<10)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(good[:14])
	f.Add(append(bytes.Clone(good), 1, 2, 3))
	f.Add([]byte("KLBACKUP\x00\x01\x00\x00\x00\x00"))
	f.Add([]byte{})
	key := rootKey(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := archive.NewReader(context.Background(), bytes.NewReader(data), key)
		if err != nil {
			if errs.As(err) == nil {
				t.Fatalf("NewReader error is not an errs value: %v", err)
			}
			return
		}
		defer r.Close()
		for range 1 << 20 {
			_, err := r.Next()
			if err == io.EOF {
				return
			}
			if err != nil {
				if errs.As(err) == nil {
					t.Fatalf("Next error is not an errs value: %v", err)
				}
				return
			}
		}
		t.Fatal("the reader did not end")
	})
}
