package archive_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/backup/volume/dir"
	"github.com/keyline/keyline/internal/backup/volume/volumetest"
)

// encodings are the forms a careless format would leak a marker in: raw,
// hex, and base64 at each of the three byte alignments.
func encodings(marker []byte) [][]byte {
	out := [][]byte{marker, []byte(hex.EncodeToString(marker)), []byte(strings.ToUpper(hex.EncodeToString(marker)))}
	for pad := range 3 {
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
			s := enc.EncodeToString(append(make([]byte, pad), marker...))
			// Drop the characters mixed with the padding and the tail.
			out = append(out, []byte(strings.TrimRight(s, "=")[4*((pad+2)/3)+4:len(s)-4]))
		}
	}
	return out
}

func countHits(b, marker []byte) int {
	n := 0
	for _, enc := range encodings(marker) {
		if bytes.Contains(b, enc) {
			n++
		}
	}
	return n
}

func assertNoMarker(t *testing.T, root string, marker []byte) int {
	t.Helper()
	files := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if countHits(b, marker) > 0 {
			t.Errorf("%s holds the marker", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestBackupHoldsNoPlaintext backs up a store whose batches, metadata key,
// metadata value and partition name hold a random marker, to both kinds of
// volume, and finds the marker in no file of either, in any encoding. The
// backup still restores with the marker in it, so the marker did go in.
func TestBackupHoldsNoPlaintext(t *testing.T) {
	var raw [12]byte
	rand.Read(raw[:])
	marker := []byte("canary" + hex.EncodeToString(raw[:]))
	ctx := context.Background()
	// The search must see the marker in every form it looks for.
	for pad := range 3 {
		text := "x" + base64.StdEncoding.EncodeToString(append(make([]byte, pad), marker...)) + "x" + hex.EncodeToString(marker)
		if hits := countHits([]byte(text), marker); hits < 2 {
			t.Fatalf("the marker search misses base64 at alignment %d or hex (%d hits)", pad, hits)
		}
	}

	src := openStore(t, tempDir(t, "src"), storeOptions("dep-1"))
	fillStore(t, src, 40, marker)
	p, err := src.Partition(string(marker), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Append(ctx, seglogMeta(3), bytes.Repeat(marker, 50)); err != nil {
		t.Fatal(err)
	}
	if err := src.PutMeta("key-"+string(marker), []byte("v")); err != nil {
		t.Fatal(err)
	}

	dirRoot := tempDir(t, "dirvolume")
	dv, err := dir.New(dirRoot)
	if err != nil {
		t.Fatal(err)
	}
	backupTo(t, src, dv, "b1.kbk", archivePlainOptions())
	if n := assertNoMarker(t, dirRoot, marker); n != 1 {
		t.Fatalf("the dir volume holds %d files, want 1", n)
	}

	srv := volumetest.StartS3(t)
	sv := srv.NewBucketVolume(t, "keyline-backups", "deployments/d1/")
	backupTo(t, src, sv, "b1.kbk", archivePlainOptions())
	if n := assertNoMarker(t, srv.DataDir, marker); n == 0 {
		t.Fatal("the S3 server's directory holds no files")
	}

	// The marker is in the backup, sealed: it comes back on restore.
	obj, err := sv.Open(ctx, "b1.kbk")
	if err != nil {
		t.Fatal(err)
	}
	defer obj.Close()
	target, opts := tempDir(t, "restored"), storeOptions("dep-2")
	if err := restoreFrom(t, obj, target, opts); err != nil {
		t.Fatal(err)
	}
	restored := openStore(t, target, opts)
	if v, ok := restored.GetMeta("topic/2/config"); !ok || !bytes.Equal(v, marker) {
		t.Fatal("the restored metadata lost the marker")
	}
}
