package backup_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/backup"
	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/streams/seglog"
)

func rootKey(t *testing.T) *archive.LocalRootKey {
	k, err := archive.NewLocalRootKey("crn:v1:bluemix:public:kms:us-south:a/acct:inst:key:k1", "v1", seal.RandomKey())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newStore(t *testing.T, dir, id string) (*seglog.Store, seglog.Options) {
	opts := seglog.Options{StoreID: id, Keys: []*seglog.DEK{{ID: "dek-" + id, Key: seal.RandomKey()}}}
	s, err := seglog.Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, opts
}

// TestTakeAndRestoreIntoNewDeployment: a backup taken from one deployment
// restores as another deployment's store, under that deployment's DEK.
func TestTakeAndRestoreIntoNewDeployment(t *testing.T) {
	ctx := context.Background()
	src, _ := newStore(t, filepath.Join(t.TempDir(), "src"), "dep-a")
	p, err := src.Partition("events-0", true)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		if _, err := p.Append(ctx, seglog.BatchMeta{Records: 3, ProducerID: -1, BaseSequence: -1}, bytes.Repeat([]byte{byte(i)}, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	src.PutMeta("topic/events/config", []byte(`{"partitions":1}`))
	key := rootKey(t)
	for _, kind := range []string{"dir", "s3"} {
		t.Run(kind, func(t *testing.T) {
			cfg := backup.VolumeConfig{Kind: kind, DataDir: t.TempDir()}
			if kind == "s3" {
				cfg.S3 = volumetest.StartS3(t).Config("keyline-backups", "")
			}
			vol, err := backup.OpenVolume(ctx, cfg, "dep-a")
			if err != nil {
				t.Fatal(err)
			}
			h, err := backup.Take(ctx, src, vol, "b1.kbk", key, archive.WriterOptions{BackupID: "b1", Created: time.Now()}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, c, err := backup.Verify(ctx, vol, "b1.kbk", key); err != nil || c.TotalOffsets() != 150 || c.Meta != 1 {
				t.Fatalf("Verify = %+v, %v", c, err)
			}
			target := filepath.Join(t.TempDir(), "dep-b")
			opts := seglog.Options{StoreID: "dep-b", Keys: []*seglog.DEK{{ID: "dek-b", Key: seal.RandomKey()}}}
			got, err := backup.RestoreInto(ctx, vol, "b1.kbk", key, target, opts, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.BackupID != h.BackupID || got.WrappedDEK.KeyCRN != h.WrappedDEK.KeyCRN {
				t.Fatalf("restored header %+v, wrote %+v", got, h)
			}
			dst, err := seglog.Open(target, opts)
			if err != nil {
				t.Fatal(err)
			}
			defer dst.Close()
			q, err := dst.Partition("events-0", false)
			if err != nil || q.EndOffset() != 150 {
				t.Fatalf("restored partition: %v, end %d", err, q.EndOffset())
			}

			// The root key rotates: the backup moves to the new version in
			// place and restores with it.
			rotated, err := archive.NewLocalRootKey(h.WrappedDEK.KeyCRN, "v2", seal.RandomKey())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := backup.Rewrap(ctx, vol, "b1.kbk", key, rotated); err != nil {
				t.Fatal(err)
			}
			if _, err := backup.RestoreInto(ctx, vol, "b1.kbk", key, filepath.Join(t.TempDir(), "old-key"), opts, nil); errs.KindOf(err) != errs.Unprocessable {
				t.Fatalf("restore with the old key version after rewrap = %v", err)
			}
			if _, err := backup.RestoreInto(ctx, vol, "b1.kbk", rotated, filepath.Join(t.TempDir(), "new-key"), opts, nil); err != nil {
				t.Fatalf("restore with the rotated key: %v", err)
			}
		})
	}
}

// TestFailedTakeLeavesNoObject: a backup that fails part way (here its
// context is canceled) leaves the volume as it was.
func TestFailedTakeLeavesNoObject(t *testing.T) {
	src, _ := newStore(t, filepath.Join(t.TempDir(), "src"), "dep-a")
	p, _ := src.Partition("events-0", true)
	for range 20 {
		p.Append(context.Background(), seglog.BatchMeta{Records: 1}, make([]byte, 1<<16))
	}
	vol, err := backup.OpenVolume(context.Background(), backup.VolumeConfig{DataDir: t.TempDir()}, "dep-a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Canceled once the object is being written: at the first progress.
	cancelOnProgress := func(done, total int64) { cancel() }
	if _, err := backup.Take(ctx, src, vol, "b1.kbk", rootKey(t), archive.WriterOptions{BackupID: "b1", Created: time.Now()}, cancelOnProgress); err == nil {
		t.Fatal("a canceled backup succeeded")
	}
	if l, err := vol.List(context.Background(), ""); err != nil || len(l) != 0 {
		t.Fatalf("the volume holds %+v after a failed backup (%v)", l, err)
	}
	target := filepath.Join(t.TempDir(), "dep-b")
	_, err = backup.RestoreInto(context.Background(), vol, "b1.kbk", rootKey(t), target, seglog.Options{StoreID: "x", Keys: []*seglog.DEK{{ID: "k", Key: seal.RandomKey()}}}, nil)
	if errs.KindOf(err) != errs.NotExist {
		t.Fatalf("restore of a missing backup = %v, want NotExist", err)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatal("a failed restore created the target")
	}
}
