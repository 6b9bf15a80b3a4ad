package objlog

import (
	"bytes"
	"container/list"
	"context"
	"errors"
	"io"
	"net/url"
	"strings"
	"sync"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/keyline/keyline/internal/errs"
)

// BucketConfig says where deployment data goes.
type BucketConfig struct {
	Endpoint  string // host:port
	Secure    bool   // HTTPS
	Region    string // "us-east-1" when empty
	Bucket    string
	AccessKey string
	SecretKey string
}

// ParseURL reads s3://bucket?endpoint=http://host:port&region=r. The
// credentials are not part of the URL: the caller fills them in.
func ParseURL(raw string) (BucketConfig, error) {
	const op = "objlog.ParseURL"
	bad := func(why string) (BucketConfig, error) {
		return BucketConfig{}, errs.E(op, errs.Invalid, "OBJECT_STORE_URL_INVALID", "The object store URL "+why+": use s3://bucket?endpoint=http://host:port&region=name")
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "s3" {
		return bad("is not an s3:// URL")
	}
	if u.User != nil {
		return bad("must not hold credentials (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
	}
	if u.Host == "" || u.Path != "" && u.Path != "/" {
		return bad("names no bucket")
	}
	q := u.Query()
	cfg := BucketConfig{Bucket: u.Host, Region: q.Get("region"), Endpoint: "s3.amazonaws.com", Secure: true}
	if ep := q.Get("endpoint"); ep != "" {
		e, err := url.Parse(ep)
		if err != nil || (e.Scheme != "http" && e.Scheme != "https") || e.Host == "" || e.Path != "" && e.Path != "/" {
			return bad("has an endpoint that is not http(s)://host[:port]")
		}
		cfg.Endpoint, cfg.Secure = e.Host, e.Scheme == "https"
	}
	for k := range q {
		if k != "endpoint" && k != "region" {
			return bad("has an unknown parameter " + strings.ToValidUTF8(k, "?"))
		}
	}
	return cfg, nil
}

// Bucket is the S3-compatible bucket that holds deployments' objects.
type Bucket struct {
	client *minio.Client
	name   string
}

// NewBucket connects to the bucket (no request is made until first use).
func NewBucket(cfg BucketConfig) (*Bucket, error) {
	const op = "objlog.NewBucket"
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, errs.E(op, errs.Invalid, "OBJECT_STORE_CONFIG_INVALID", "An object store needs an endpoint and a bucket")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure:       cfg.Secure,
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
		// A flush has its own deadline; retrying inside it only delays
		// the producer's retriable error.
		MaxRetries: 2,
	})
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "OBJECT_STORE_CONFIG_INVALID", "The object store endpoint is not valid").Because(err)
	}
	return &Bucket{client: client, name: cfg.Bucket}, nil
}

// EnsureBucket creates the bucket when it does not exist.
func (b *Bucket) EnsureBucket(ctx context.Context) error {
	const op = "objlog.EnsureBucket"
	ok, err := b.client.BucketExists(ctx, b.name)
	if err != nil {
		return fail(op, err)
	}
	if ok {
		return nil
	}
	if err := b.client.MakeBucket(ctx, b.name, minio.MakeBucketOptions{}); err != nil {
		if code := minio.ToErrorResponse(err).Code; code != "BucketAlreadyOwnedByYou" && code != "BucketAlreadyExists" {
			return fail(op, err)
		}
	}
	return nil
}

func (b *Bucket) put(ctx context.Context, name string, chunks [][]byte, size int64) error {
	rs := make([]io.Reader, len(chunks))
	for i, c := range chunks {
		rs[i] = bytes.NewReader(c)
	}
	_, err := b.client.PutObject(ctx, b.name, name, io.MultiReader(rs...), size, minio.PutObjectOptions{
		ContentType: "application/octet-stream", DisableMultipart: true, SendContentMd5: false,
	})
	if err != nil {
		return fail("objlog.put", err)
	}
	return nil
}

// getRange reads n bytes at off of an object.
func (b *Bucket) getRange(ctx context.Context, name string, off, n int64) ([]byte, error) {
	const op = "objlog.get"
	opts := minio.GetObjectOptions{}
	if err := opts.SetRange(off, off+n-1); err != nil {
		return nil, errs.Internalf(op, err)
	}
	obj, err := b.client.GetObject(ctx, b.name, name, opts)
	if err != nil {
		return nil, fail(op, err)
	}
	defer obj.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(obj, buf); err != nil {
		return nil, fail(op, err)
	}
	return buf, nil
}

func (b *Bucket) remove(ctx context.Context, names []string) error {
	for _, n := range names {
		if err := b.client.RemoveObject(ctx, b.name, n, minio.RemoveObjectOptions{}); err != nil && minio.ToErrorResponse(err).Code != "NoSuchKey" {
			return fail("objlog.remove", err)
		}
	}
	return nil
}

// list returns the names of the objects under prefix.
func (b *Bucket) list(ctx context.Context, prefix string) ([]string, error) {
	var names []string
	for o := range b.client.ListObjects(ctx, b.name, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, fail("objlog.list", o.Err)
		}
		names = append(names, o.Key)
	}
	return names, nil
}

// fail maps a client error to an errs value that names no credentials.
func fail(op string, err error) error {
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey":
		return errs.E(op, errs.Unprocessable, "OBJECT_MISSING", "An object the log refers to is missing from the object store").Because(err)
	case "NoSuchBucket":
		return errs.E(op, errs.Unavailable, "BUCKET_NOT_FOUND", "The object store bucket does not exist").Because(err)
	case "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch":
		return errs.E(op, errs.Unavailable, "STORAGE_ACCESS_DENIED", "The object store refused the credentials").Because(err)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return errs.E(op, errs.Unavailable, "STORAGE_TIMEOUT", "The object store did not answer in time").Because(err)
	}
	return errs.E(op, errs.Unavailable, "STORAGE_UNAVAILABLE", "The object store failed the request").Because(err)
}

// chunkCache holds sealed chunks, bounded by bytes, least recently used
// out first. It holds only sealed bytes: a read opens its chunks again.
type chunkCache struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	lru   list.List // of *cacheEntry, most recent first
	byKey map[chunkKey]*list.Element
}

type chunkKey struct {
	object string
	pos    int64
}

type cacheEntry struct {
	key  chunkKey
	data []byte
}

func newChunkCache(max int64) *chunkCache {
	return &chunkCache{max: max, byKey: map[chunkKey]*list.Element{}}
}

func (c *chunkCache) get(k chunkKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[k]
	if !ok {
		return nil, false
	}
	c.lru.MoveToFront(e)
	return e.Value.(*cacheEntry).data, true
}

func (c *chunkCache) put(k chunkKey, data []byte) {
	if int64(len(data)) > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.byKey[k]; ok {
		return
	}
	c.byKey[k] = c.lru.PushFront(&cacheEntry{k, data})
	c.bytes += int64(len(data))
	for c.bytes > c.max {
		e := c.lru.Back()
		ce := e.Value.(*cacheEntry)
		c.lru.Remove(e)
		delete(c.byKey, ce.key)
		c.bytes -= int64(len(ce.data))
	}
}

// dropObject forgets an object's chunks (deleted or rewritten).
func (c *chunkCache) dropObject(object string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Front(); e != nil; {
		next := e.Next()
		if ce := e.Value.(*cacheEntry); ce.key.object == object {
			c.lru.Remove(e)
			delete(c.byKey, ce.key)
			c.bytes -= int64(len(ce.data))
		}
		e = next
	}
}
