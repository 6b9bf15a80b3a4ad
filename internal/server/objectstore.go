package server

import (
	"context"
	"time"

	"github.com/keyline/keyline/internal/streams/objlog"
)

// objectStore connects to the bucket of --object-store (nil without one),
// creating the bucket when it is missing, so that a wrong URL or
// credentials fail the start rather than the first produce.
func (s *Server) objectStore(ctx context.Context) (*objlog.Bucket, error) {
	if s.cfg.ObjectStore == "" {
		return nil, nil
	}
	cfg, err := objlog.ParseURL(s.cfg.ObjectStore)
	if err != nil {
		return nil, err
	}
	cfg.AccessKey, cfg.SecretKey = s.cfg.ObjectStoreAccessKey, s.cfg.ObjectStoreSecretKey
	b, err := objlog.NewBucket(cfg)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := b.EnsureBucket(ctx); err != nil {
		return nil, err
	}
	return b, nil
}
