package iam

import (
	"context"

	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Topics of the change feed that IAM's caches follow.
const (
	topicPolicy      = "iam.policy"       // key: policy id
	topicAPIKey      = "iam.apikey"       // key: API key id
	topicIdentity    = "iam.identity"     // key: IAM id
	topicSigningKeys = "iam.signing-keys" // key: the new kid
)

// JoinCluster keeps the policy index, the token cache and the signing keys
// true when other nodes share the database: their changes arrive through
// f, and while f is not trusted Authorize reads the policies from the
// database and tokens are verified on every call.
func (s *Service) JoinCluster(ctx context.Context, f *cluster.Feed) {
	s.feed = f
	f.Subscribe(topicPolicy, func(id string) { s.reloadPolicy(ctx, id) })
	f.Subscribe(topicAPIKey, func(id string) { s.tokens.revoke(id, "") })
	f.Subscribe(topicIdentity, func(iamID string) { s.tokens.revoke("", iamID) })
	f.Subscribe(topicSigningKeys, func(string) { s.reloadSigningKeys(ctx) })
	f.OnReset(func() {
		s.tokens.revokeAll()
		s.policyMu.Lock()
		if err := s.loadPolicies(ctx); err != nil {
			s.logger.Error("iam: reloading policies", "err", err)
		}
		s.policyMu.Unlock()
		s.reloadSigningKeys(ctx)
	})
}

// trusted says whether the in-memory caches may answer.
func (s *Service) trusted() bool { return s.feed.Trusted() }

// reloadPolicy puts another node's committed version of a policy into the
// index (applyPolicy keeps the newer of two versions).
func (s *Service) reloadPolicy(ctx context.Context, id string) {
	var p Policy
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		p, err = scanPolicy(tx.QueryRow(`SELECT doc, version FROM iam_policies WHERE id = ?`, id))
		return err
	})
	if err != nil {
		if !store.IsNoRows(err) {
			s.logger.Error("iam: reloading a policy changed by another node", "policy", id, "err", err)
		}
		return
	}
	s.applyPolicy(p)
}

func (s *Service) reloadSigningKeys(ctx context.Context) {
	keys, err := s.readSigningKeys(ctx)
	if err != nil || keys == nil {
		s.logger.Error("iam: reloading the token signing keys", "err", err)
		return
	}
	s.signing.Store(keys)
}

// policyIndexFor is the index Authorize decides on: the in-memory one, or,
// while the change feed is not trusted, one read from the database now.
func (s *Service) policyIndexFor(ctx context.Context) (*policyIndex, error) {
	if s.trusted() {
		return s.policies.Load(), nil
	}
	byID, err := s.readPolicies(ctx)
	if err != nil {
		return nil, errs.E("iam.Authorize", errs.Unavailable, "BXNIM0500E", "The access policies cannot be read; try again").Because(err)
	}
	return buildIndex(byID), nil
}
