package archive_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store/storetest"
	"github.com/keyline/keyline/internal/streams/objlog"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// TestBackupsMoveBetweenLocalDiskAndObjectStorage restores a backup of a
// log on local disk (gaps of a compacted partition, a start inside a
// batch, a partition emptied by retention, an empty one, metadata) into a
// log on object storage, which shows the same image, also after a
// reopen; and a backup of that one restores on local disk as the first.
func TestBackupsMoveBetweenLocalDiskAndObjectStorage(t *testing.T) {
	ctx := context.Background()
	srcOpts := storeOptions("dep-1")
	srcOpts.SegmentBytes = 2048 // for the compaction
	src := openStore(t, tempDir(t, "src"), srcOpts)
	fillStore(t, src, 60, nil)
	compacted(t, src, 100)

	s3 := volumetest.StartS3(t)
	bucket, err := objlog.NewBucket(objlog.BucketConfig{Endpoint: s3.Endpoint, Bucket: "keyline-streams", AccessKey: s3.AccessKey, SecretKey: s3.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	if err := bucket.EnsureBucket(ctx); err != nil {
		t.Fatal(err)
	}
	db := storetest.Open(t)
	opts := objlog.Options{StoreID: "dep-2", Keys: []*seglog.DEK{{ID: "dek-2", Key: seal.RandomKey()}}, CompactEvery: -1}
	ob, err := objlog.Open(ctx, db, bucket, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { ob.Close() }()
	r, err := archive.NewReader(ctx, bytes.NewReader(backupBytes(t, src, 100_000)), rootKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := archive.Restore(ctx, r, ob, nil); err != nil {
		t.Fatal(err)
	}
	r.Close()
	sameImage(t, src, ob)
	ob.Close()
	if ob, err = objlog.Open(ctx, db, bucket, opts); err != nil {
		t.Fatal(err)
	}
	sameImage(t, src, ob)

	back, backOpts := tempDir(t, "back"), storeOptions("dep-3")
	if err := restoreFrom(t, bytes.NewReader(backupBytes(t, archive.LogOf(ob), 100_000)), back, backOpts); err != nil {
		t.Fatal(err)
	}
	sameImage(t, src, openStore(t, back, backOpts))
}
