package iam_test

import (
	"context"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/iam/iamtest"
)

// secondNode is another IAM service on e's database, as another node runs.
func secondNode(t *testing.T, e *iamtest.Env) *iam.Service {
	t.Helper()
	s, err := iam.New(context.Background(), iam.Config{DB: e.DB, Master: e.Master, Audit: e.Audit, Clock: e.Clock, Issuer: iamtest.Issuer})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestUntrustedFeedMakesAuthorizeReadTheDatabase is a second node whose
// change feed has gone quiet (never started here): once the feed is no
// longer trusted, a policy revoked through the first node denies the very
// next call on the second, which reads the policies from the database
// instead of its stale index.
func TestUntrustedFeedMakesAuthorizeReadTheDatabase(t *testing.T) {
	e := iamtest.New(t)
	if !e.DB.Shared() {
		t.Skip("one process on SQLite: there is no other node")
	}
	ctx := context.Background()
	user, _ := e.NewUser(t, "reader@example.com")
	inst := kmsInstance(e, "kp-cluster")
	pol := e.Grant(t, user.IAMID, inst, auth.RoleReader)

	other := secondNode(t, e)
	feed, err := cluster.NewFeed(ctx, e.DB, nil)
	if err != nil {
		t.Fatal(err)
	}
	other.JoinCluster(ctx, feed)
	if err := other.Authorize(ctx, user, auth.KMSKeyList, inst); err != nil {
		t.Fatalf("the second node denies the reader: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for feed.Trusted() {
		if time.Now().After(deadline) {
			t.Fatal("a feed that reads nothing is still trusted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := e.Service.DeletePolicy(e.AsAdmin(), pol.ID); err != nil {
		t.Fatal(err)
	}
	if err := other.Authorize(ctx, user, auth.KMSKeyList, inst); err == nil {
		t.Fatal("the second node allowed a call on a revoked policy while its feed was not trusted")
	}
}

// TestRotatedSigningKeyIsAcceptedByEveryNode rotates the token signing key
// through one node: a token it then signs is accepted by a node that loaded
// the keys before the rotation, and both publish the old and the new key
// (tokens signed with the old one stay valid until they expire).
func TestRotatedSigningKeyIsAcceptedByEveryNode(t *testing.T) {
	e := iamtest.New(t)
	ctx := context.Background()
	other := secondNode(t, e)
	before, err := e.Service.Token(ctx, iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: e.AdminKey})
	if err != nil {
		t.Fatal(err)
	}
	kid, err := e.Service.RotateSigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, err := e.Service.Token(ctx, iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: e.AdminKey})
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"before": before.AccessToken, "after": after.AccessToken} {
		if _, err := other.AuthenticateToken(ctx, tok); err != nil {
			t.Fatalf("the other node refuses the token issued %s the rotation: %v", name, err)
		}
	}
	for _, svc := range []*iam.Service{e.Service, other} {
		jwks := svc.JWKS()
		if len(jwks) != 2 || jwks[0].Kid != kid {
			t.Fatalf("JWKS = %+v, want the new key %s first and the old one", jwks, kid)
		}
	}
}

// TestDeletingAnIdentityDeletesPoliciesAnotherNodeCreated grants a service
// ID a policy through one node and deletes the service ID through another
// whose index has not heard of the policy yet: the policy goes with it.
func TestDeletingAnIdentityDeletesPoliciesAnotherNodeCreated(t *testing.T) {
	e := iamtest.New(t)
	ctx := e.AsAdmin()
	other := secondNode(t, e)
	sid, err := e.Service.CreateServiceID(ctx, iam.ServiceIDRequest{AccountID: e.Account.ID, Name: "doomed"})
	if err != nil {
		t.Fatal(err)
	}
	pol := e.Grant(t, sid.IAMID, kmsInstance(e, "kp-doomed"), auth.RoleReader)
	if err := other.DeleteServiceID(ctx, sid.ID); err != nil {
		t.Fatal(err)
	}
	other2 := secondNode(t, e)
	got, err := other2.GetPolicy(ctx, pol.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != iam.StateDeleted {
		t.Fatalf("the deleted service ID's policy is %s, want deleted", got.State)
	}
}

// TestSigningKeyIsReplacedWhenDue signs tokens once the signing key is
// older than its lifetime: a new key is made (one, although two nodes
// notice), both nodes publish it with the old one, and new tokens are
// signed with it. (TestRotatedSigningKeyIsAcceptedByEveryNode shows tokens
// of a replaced key stay valid.)
func TestSigningKeyIsReplacedWhenDue(t *testing.T) {
	e := iamtest.New(t)
	ctx := context.Background()
	other := secondNode(t, e)
	old, err := e.Service.Token(ctx, iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: e.AdminKey})
	if err != nil {
		t.Fatal(err)
	}
	oldKid := e.Service.JWKS()[0].Kid
	e.Clock.Advance(iam.SigningKeyLifetime + time.Hour)
	deadline := time.Now().Add(15 * time.Second)
	for {
		for _, svc := range []*iam.Service{e.Service, other} {
			if _, err := svc.Token(ctx, iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: e.AdminKey}); err != nil {
				t.Fatal(err)
			}
		}
		if len(e.Service.JWKS()) == 2 && len(other.JWKS()) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new signing key: JWKS %+v", e.Service.JWKS())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if jwks := other.JWKS(); len(jwks) != 2 || jwks[0].Kid == oldKid || jwks[1].Kid != oldKid {
		t.Fatalf("JWKS after the replacement = %+v, want a new key then %s", jwks, oldKid)
	}
	if _, err = other.AuthenticateToken(ctx, old.AccessToken); err == nil {
		t.Fatal("an access token issued 90 days ago is still valid")
	}
	fresh, err := other.Token(ctx, iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: e.AdminKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Service.AuthenticateToken(ctx, fresh.AccessToken); err != nil {
		t.Fatalf("a token of the new key is refused: %v", err)
	}
}
