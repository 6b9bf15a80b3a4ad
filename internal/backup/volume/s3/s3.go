// Package s3 keeps a backup volume in an S3-compatible bucket, under a key
// prefix. Objects are streamed up as multipart uploads, so no object is
// ever held whole in memory, and appear only when the upload completes.
package s3

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/keyline/keyline/internal/backup/volume"
	"github.com/keyline/keyline/internal/errs"
)

// Config says where the bucket is.
type Config struct {
	Endpoint  string // host:port
	Secure    bool   // HTTPS
	Region    string // "us-east-1" when empty
	Bucket    string
	AccessKey string
	SecretKey string
	// Prefix goes before every object name, e.g. "deployments/<guid>/".
	Prefix string
	// PartSize is the multipart part size, and the memory one upload uses
	// (default 16 MiB; S3 needs at least 5 MiB).
	PartSize uint64
}

const defaultPartSize = 16 << 20

// Volume is a bucket prefix.
type Volume struct {
	client   *minio.Client
	bucket   string
	prefix   string
	partSize uint64
}

var _ volume.Volume = (*Volume)(nil)

// New connects to the bucket (no request is made until first use).
func New(cfg Config) (*Volume, error) {
	const op = "backup/volume/s3.New"
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errs.E(op, errs.Invalid, "VOLUME_CONFIG_INVALID", "An S3 volume needs an endpoint and a bucket")
	}
	if cfg.Prefix != "" {
		if err := volume.CheckPrefix(op, cfg.Prefix); err != nil || !strings.HasSuffix(cfg.Prefix, "/") {
			return nil, errs.E(op, errs.Invalid, "VOLUME_CONFIG_INVALID", "An S3 volume prefix is a name ending in '/'")
		}
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = defaultPartSize
	}
	if cfg.PartSize < 5<<20 {
		return nil, errs.E(op, errs.Invalid, "VOLUME_CONFIG_INVALID", "The S3 part size must be at least 5 MiB")
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       cfg.Secure,
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "VOLUME_CONFIG_INVALID", "The S3 endpoint is not valid").Because(err)
	}
	return &Volume{client: client, bucket: cfg.Bucket, prefix: cfg.Prefix, partSize: cfg.PartSize}, nil
}

// EnsureBucket creates the bucket when it does not exist.
func (v *Volume) EnsureBucket(ctx context.Context) error {
	const op = "backup/volume/s3.EnsureBucket"
	ok, err := v.client.BucketExists(ctx, v.bucket)
	if err != nil {
		return v.fail(op, err)
	}
	if ok {
		return nil
	}
	if err := v.client.MakeBucket(ctx, v.bucket, minio.MakeBucketOptions{}); err != nil {
		if code := minio.ToErrorResponse(err).Code; code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			return nil
		}
		return v.fail(op, err)
	}
	return nil
}

// fail maps a client error to an errs value that names no credentials.
func (v *Volume) fail(op string, err error) error {
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey":
		return volume.NotFound(op)
	case "NoSuchBucket":
		return errs.E(op, errs.Unavailable, "BUCKET_NOT_FOUND", "The backup bucket does not exist").Because(err)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch":
		return errs.E(op, errs.Unavailable, "STORAGE_ACCESS_DENIED", "The backup storage refused the volume's credentials").Because(err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errs.E(op, errs.Unavailable, "CANCELED", "The storage request was canceled").Because(err)
	}
	var nerr net.Error
	var uerr *url.Error
	if errors.As(err, &nerr) || errors.As(err, &uerr) {
		return errs.E(op, errs.Unavailable, "STORAGE_UNAVAILABLE", "The backup storage cannot be reached").Because(err)
	}
	return errs.E(op, errs.Unavailable, "STORAGE_ERROR", "The backup storage failed the request").Because(err)
}

// Create implements volume.Volume: the bytes written go through a pipe to
// a multipart upload that completes on Close.
func (v *Volume) Create(ctx context.Context, name string) (io.WriteCloser, error) {
	const op = "backup/volume/s3.Create"
	if err := volume.CheckName(op, name); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, volume.Aborted(op, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	w := &writer{pw: pw, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		_, err := v.client.PutObject(ctx, v.bucket, v.prefix+name, pr, -1, minio.PutObjectOptions{
			PartSize:    v.partSize,
			ContentType: "application/octet-stream",
		})
		if err != nil {
			w.err = v.fail(op, err)
		}
		// Unblock a writer still in Write when the upload gave up.
		pr.CloseWithError(errUploadEnded)
	}()
	return w, nil
}

var errUploadEnded = errors.New("the upload ended")

type writer struct {
	pw     *io.PipeWriter
	cancel context.CancelFunc
	done   chan struct{}
	err    error // the upload's outcome, read after done is closed

	mu     sync.Mutex
	closed bool
}

func (w *writer) Write(p []byte) (int, error) {
	n, err := w.pw.Write(p)
	if err != nil {
		<-w.done
		if w.err != nil {
			return n, w.err
		}
		return n, volume.Aborted("backup/volume/s3.Write", err)
	}
	return n, nil
}

// Close ends the stream and waits for the upload to complete.
func (w *writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return volume.Aborted("backup/volume/s3.Close", nil)
	}
	w.closed = true
	w.pw.Close()
	<-w.done
	w.cancel()
	return w.err
}

// Abort fails the stream: the client aborts the multipart upload.
func (w *writer) Abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	w.closed = true
	w.pw.CloseWithError(volume.Aborted("backup/volume/s3.Abort", nil))
	<-w.done
	w.cancel()
}

// Open implements volume.Volume.
func (v *Volume) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	const op = "backup/volume/s3.Open"
	if err := volume.CheckName(op, name); err != nil {
		return nil, err
	}
	obj, err := v.client.GetObject(ctx, v.bucket, v.prefix+name, minio.GetObjectOptions{})
	if err != nil {
		return nil, v.fail(op, err)
	}
	// GetObject is lazy: Stat makes the request, so a missing object fails
	// here rather than on the first Read.
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, v.fail(op, err)
	}
	return &reader{obj: obj, v: v}, nil
}

type reader struct {
	obj *minio.Object
	v   *Volume
}

func (r *reader) Read(p []byte) (int, error) {
	n, err := r.obj.Read(p)
	if err != nil && err != io.EOF {
		return n, r.v.fail("backup/volume/s3.Read", err)
	}
	return n, err
}

func (r *reader) Close() error { return r.obj.Close() }

// Stat implements volume.Volume.
func (v *Volume) Stat(ctx context.Context, name string) (volume.Info, error) {
	const op = "backup/volume/s3.Stat"
	if err := volume.CheckName(op, name); err != nil {
		return volume.Info{}, err
	}
	st, err := v.client.StatObject(ctx, v.bucket, v.prefix+name, minio.StatObjectOptions{})
	if err != nil {
		return volume.Info{}, v.fail(op, err)
	}
	return volume.Info{Name: name, Size: st.Size, Modified: st.LastModified.UTC()}, nil
}

// List implements volume.Volume.
func (v *Volume) List(ctx context.Context, prefix string) ([]volume.Info, error) {
	const op = "backup/volume/s3.List"
	if err := volume.CheckPrefix(op, prefix); err != nil {
		return nil, err
	}
	var out []volume.Info
	for obj := range v.client.ListObjects(ctx, v.bucket, minio.ListObjectsOptions{Prefix: v.prefix + prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, v.fail(op, obj.Err)
		}
		name := strings.TrimPrefix(obj.Key, v.prefix)
		if volume.CheckName(op, name) != nil {
			continue // not an object this volume wrote
		}
		out = append(out, volume.Info{Name: name, Size: obj.Size, Modified: obj.LastModified.UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Delete implements volume.Volume.
func (v *Volume) Delete(ctx context.Context, name string) error {
	const op = "backup/volume/s3.Delete"
	if err := volume.CheckName(op, name); err != nil {
		return err
	}
	if err := v.client.RemoveObject(ctx, v.bucket, v.prefix+name, minio.RemoveObjectOptions{}); err != nil {
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil
		}
		return v.fail(op, err)
	}
	return nil
}
