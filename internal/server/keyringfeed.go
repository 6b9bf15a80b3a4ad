package server

import (
	"context"
	"slices"
	"strings"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// topicKeyring is the change feed's topic for the stored keyring: a master
// key rotation (its start adds the new key, its end drops the old one) or
// a rekey on one node changes what every other node must hold.
const topicKeyring = "seal.keyring"

// Change keys of topicKeyring: what changed the keyring.
const (
	keyringRotated = "rotate" // the master keys changed, under the same unseal key
	keyringRekeyed = "rekey"  // the same master keys, under a new unseal key
)

// keyringChanged marks, in tx, that the stored keyring changed.
func keyringChanged(tx *store.Tx, why string) { tx.Changed(topicKeyring, why) }

// followKeyring keeps this node's master keys those of the stored keyring,
// so that a value another node seals under a new master key opens here
// too, and a dropped key leaves this node's memory as well.
func (s *Server) followKeyring(ctx context.Context, feed *cluster.Feed) {
	feed.Subscribe(topicKeyring, func(why string) { s.reloadKeyring(ctx, why) })
	feed.OnReset(func() { s.reloadKeyring(ctx, keyringRotated) })
}

// reloadKeyring opens the stored keyring with this node's unseal key and
// makes it this node's. After a rekey elsewhere the unseal key is stale,
// but the master keys are the same: the node goes on and says so. A
// keyring this node cannot open after a rotation holds master keys it does
// not have: the node seals itself rather than fail every call that needs
// the new key; the operators unseal it with the current shares (an
// auto-unseal node is restarted).
func (s *Server) reloadKeyring(ctx context.Context, why string) {
	b := s.barrier
	b.mu.Lock()
	if b.sealed || b.ring == nil || b.unsealKey == nil {
		b.mu.Unlock()
		return
	}
	c, err := readSealConfig(ctx, s.db)
	if err != nil || c == nil || c.Keyring == nil {
		b.mu.Unlock()
		if err != nil {
			s.cfg.Logger.Error("reading the keyring another node changed", "err", err)
		}
		return
	}
	r := &b.rotation
	r.keyringMu.Lock()
	next, err := seal.OpenKeyring(b.unsealKey, c.Keyring)
	if err == nil {
		if !slices.Equal(next.Versions(), b.ring.Versions()) || next.Current() != b.ring.Current() {
			s.cfg.Logger.Info("master keys changed on another node", "versions", next.Versions(), "current", next.Current())
		}
		b.ring.Replace(next)
	}
	r.keyringMu.Unlock()
	b.mu.Unlock()
	if err == nil {
		return
	}
	if strings.HasPrefix(why, keyringRekeyed) {
		s.cfg.Logger.Warn("the unseal key changed on another node (rekey): this node keeps its master keys; after a restart it needs the new shares")
		return
	}
	s.cfg.Logger.Error("another node changed the master keys under an unseal key this node does not hold (a rekey): sealing this node; unseal it with the current shares")
	ev := audit.NewEvent(ctx, "keyline.sys.seal", audit.Target{ID: "crn:v1:bluemix:public:keyline:global:a/" + s.svc.account + "::", TypeURI: "keyline/seal"}, audit.Success, 200)
	ev.Account = s.svc.account
	ev.Initiator = audit.Initiator{ID: "keyline-node/" + s.NodeID(), Name: "keyline node " + s.NodeID(), TypeURI: "service/security/account/user"}
	addRequestData(ev, map[string]any{"reason": "the stored keyring cannot be opened with this node's unseal key"})
	// Sealing stops the services, the feed among them: not from its own
	// goroutine.
	go func() {
		if err := s.Seal(context.WithoutCancel(ctx), ev); err != nil {
			s.cfg.Logger.Error("sealing this node", "err", err)
		}
	}()
}
