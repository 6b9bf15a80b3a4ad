package iam_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/iam/iamtest"
	"github.com/keyline/keyline/internal/race"
)

func TestServiceTokenAuthenticatesAsService(t *testing.T) {
	e := iamtest.New(t)
	c := "crn:v1:bluemix:public:messagehub:us-south:a/" + e.Account.ID + ":es-1::"
	tok, err := e.Service.ServiceToken("messagehub", e.Account.ID, "es-1", c)
	if err != nil {
		t.Fatal(err)
	}
	p, err := e.Service.AuthenticateToken(context.Background(), tok.AccessToken)
	if err != nil {
		t.Fatal(err)
	}
	if p.Type != auth.Service || p.ServiceName != "messagehub" || p.SourceInstance != "es-1" || p.SourceCRN != c || p.IAMID != "crn-"+c {
		t.Fatalf("principal %+v", p)
	}
}

// FuzzAuthenticateToken feeds arbitrary bearer tokens: none may panic, and
// none but the genuine token may authenticate.
func FuzzAuthenticateToken(f *testing.F) {
	e := iamtest.New(f)
	tok, err := e.Service.Token(context.Background(), iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: e.AdminKey})
	if err != nil {
		f.Fatal(err)
	}
	good := tok.AccessToken
	f.Add(good)
	f.Add(tok.RefreshToken)
	f.Add(strings.Replace(good, ".", "..", 1))
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		p, err := e.Service.AuthenticateToken(context.Background(), token)
		if err == nil && (token != good || p.IAMID != e.Admin.IAMID) {
			t.Fatalf("token %q authenticated as %+v", token, p)
		}
	})
}

// TestCachedTokenCheckAllocatesOnlyThePrincipal: a token seen before costs
// one allocation (the caller's copy of the principal), not a copy of the
// token (about 1 KiB) for hashing on every call of every API.
func TestCachedTokenCheckAllocatesOnlyThePrincipal(t *testing.T) {
	if race.Enabled {
		t.Skip("the race detector allocates on its own")
	}
	e := iamtest.New(t)
	ctx := context.Background()
	tok, err := e.Service.Token(ctx, iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: e.AdminKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Service.AuthenticateToken(ctx, tok.AccessToken); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := e.Service.AuthenticateToken(ctx, tok.AccessToken); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 {
		t.Fatalf("a cached token check allocates %v objects, want 1", allocs)
	}
}
