package kms

import (
	"context"

	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/store"
)

// Topics of the change feed that the KMS's caches follow.
const (
	topicKeys      = "kms.keys"       // instances, keys and versions: the hot cache
	topicAllowedIP = "kms.allowed-ip" // key: instance GUID
)

// JoinCluster keeps the hot key cache and the allowedIP index true when
// other nodes share the database: a key disabled or deleted through another
// node stops wrapping here as soon as its change arrives, and while f is
// not trusted every call reads keys and policies from the database.
func (s *Service) JoinCluster(ctx context.Context, f *cluster.Feed) {
	s.feed = f
	f.Subscribe(topicKeys, func(string) { s.hot.invalidate() })
	f.Subscribe(topicAllowedIP, func(guid string) { s.refreshAllowedIP(ctx, guid) })
	f.OnReset(func() {
		s.hot.invalidate()
		if err := s.reloadAllowedIP(ctx); err != nil {
			s.log.Error("kms: reloading allowedIP policies", "err", err)
		}
	})
}

// trusted says whether the in-memory caches may answer.
func (s *Service) trusted() bool { return s.feed.Trusted() }

// allowedIPChanged re-reads the instance's allowedIP policy on this node
// once tx commits, and on the others through the change feed.
func (s *Service) allowedIPChanged(ctx context.Context, tx *store.Tx, guid string) {
	tx.OnCommit(func() { s.refreshAllowedIP(ctx, guid) })
	tx.Changed(topicAllowedIP, guid)
}

// allowedIPOf returns the instance's enforced allow list and whether it has
// one: from the index, or from the database while the index is not
// trusted.
func (s *Service) allowedIPOf(ctx context.Context, guid string) (ipAllowList, bool) {
	if s.trusted() {
		return s.allowedIP.lookup(guid)
	}
	l := s.readAllowList(ctx, guid)
	return l, l != nil
}

// reloadAllowedIP replaces the whole index with the stored policies.
func (s *Service) reloadAllowedIP(ctx context.Context) error {
	s.allowedIP.mu.Lock()
	s.allowedIP.m.Store(&map[string]ipAllowList{})
	s.allowedIP.mu.Unlock()
	return s.loadAllowedIP(ctx)
}
