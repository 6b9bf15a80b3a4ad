package iam_test

import (
	"context"
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/iam/iamtest"
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
