package archive_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/errs"
)

// TestRewrapMovesBackupToRotatedKey: after the root key rotates, a backup
// rewrapped under the new version restores with it, no longer with the
// old one, and its chunks are byte for byte the same.
func TestRewrapMovesBackupToRotatedKey(t *testing.T) {
	ctx := context.Background()
	src := openStore(t, tempDir(t, "src"), storeOptions("dep-1"))
	fillStore(t, src, 40, nil)
	old := backupBytes(t, src, 8<<10)
	rotated, err := archive.NewLocalRootKey(testKeyCRN, "v2", bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	h, err := archive.Rewrap(ctx, bytes.NewReader(old), &out, rootKey(t), rotated)
	if err != nil {
		t.Fatal(err)
	}
	if h.WrappedDEK.KeyVersion != "v2" || h.BackupID != "b1" {
		t.Fatalf("rewrapped header = %+v", h)
	}
	oldLayout, newLayout := parseLayout(t, old), parseLayout(t, out.Bytes())
	if !bytes.Equal(old[oldLayout.headerEnd:], out.Bytes()[newLayout.headerEnd:]) {
		t.Fatal("rewrapping changed the chunks")
	}

	r, err := archive.NewReader(ctx, bytes.NewReader(out.Bytes()), rotated)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	restored, opts := tempDir(t, "restored"), storeOptions("dep-2")
	if err := archive.RestoreDir(ctx, r, restored, opts, nil); err != nil {
		t.Fatal(err)
	}
	sameImage(t, src, openStore(t, restored, opts))

	if _, err := archive.NewReader(ctx, bytes.NewReader(out.Bytes()), rootKey(t)); errs.KindOf(err) != errs.Unprocessable {
		t.Fatalf("the old key version still opens the rewrapped backup: %v", err)
	}
}

// TestRewrapRefusesDamagedBackup: a damaged backup is not given a fresh
// wrapping.
func TestRewrapRefusesDamagedBackup(t *testing.T) {
	src := openStore(t, tempDir(t, "src"), storeOptions("dep-1"))
	fillStore(t, src, 20, nil)
	good := backupBytes(t, src, 4<<10)
	l := parseLayout(t, good)
	for name, c := range map[string]struct {
		data []byte
		code string
	}{
		"chunk changed":   {flip(good, l.chunks[2][0]+10, 1), "BACKUP_MODIFIED"},
		"created changed": {flip(good, 24, 1), "BACKUP_MODIFIED"},
		"truncated":       {good[:l.chunks[3][0]], "BACKUP_TRUNCATED"},
		"appended":        {cat(good, []byte("x")), "BACKUP_MODIFIED"},
	} {
		var out bytes.Buffer
		_, err := archive.Rewrap(context.Background(), bytes.NewReader(c.data), &out, rootKey(t), rootKey(t))
		if e := errs.As(err); e == nil || e.Code != c.code {
			t.Errorf("%s: Rewrap = %v, want %s", name, err, c.code)
		}
	}
}
