package kms_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/kms/kmstest"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store/storetest"
)

// TestUntrustedFeedMakesWrapReadTheKey is a second node whose change feed
// has gone quiet (never started here): once it is no longer trusted, a key
// disabled through the first node refuses the second node's very next
// wrap, although the second node had the key in its cache.
func TestUntrustedFeedMakesWrapReadTheKey(t *testing.T) {
	db := storetest.Open(t)
	if !db.Shared() {
		t.Skip("one process on SQLite: there is no other node")
	}
	master, err := seal.New(seal.RandomKey())
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	log, err := audit.New(context.Background(), db, clk, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(log.Close)
	authz := kmstest.NewAuthz()
	authz.Allow("IBMid-admin", kmstest.Grant{Role: auth.RoleManager})
	node := func() *kms.Service {
		s, err := kms.New(context.Background(), kms.Config{DB: db, Master: master, Clock: clk, Authorizer: authz, Audit: kms.ActivityTracker(log)})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first, second := node(), node()
	ctx := auth.WithPrincipal(context.Background(), &auth.Principal{IAMID: "IBMid-admin", AccountID: "acct", Type: auth.User, Name: "admin"})
	if err := first.CreateInstance(ctx, kms.Instance{GUID: "kp-cluster", AccountID: "acct"}); err != nil {
		t.Fatal(err)
	}
	key, err := first.CreateKey(ctx, "kp-cluster", kms.CreateKeyInput{Name: "root"})
	if err != nil {
		t.Fatal(err)
	}
	feed, err := cluster.NewFeed(context.Background(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	second.JoinCluster(context.Background(), feed)
	dek := []byte("0123456789abcdef0123456789abcdef")
	if _, err := second.Wrap(ctx, "kp-cluster", key.ID, dek, nil); err != nil {
		t.Fatalf("wrap on the second node: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for feed.Trusted() {
		if time.Now().After(deadline) {
			t.Fatal("a feed that reads nothing is still trusted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := first.DisableKey(ctx, "kp-cluster", key.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := second.Wrap(ctx, "kp-cluster", key.ID, dek, nil); err == nil {
		t.Fatal("the second node wrapped with a key disabled through the first while its feed was not trusted")
	}
}
