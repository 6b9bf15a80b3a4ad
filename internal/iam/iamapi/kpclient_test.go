package iamapi_test

import (
	"context"
	"errors"
	"testing"

	kpiam "github.com/IBM/keyprotect-go-client/iam"
)

// IBM's own Key Protect Go client gets its tokens from our endpoint and
// understands our errors.
func TestKeyProtectClientExchangesAPIKey(t *testing.T) {
	s := newServer(t)
	ts := &kpiam.IAMTokenSource{TokenURL: s.srv.URL + "/oidc/token", APIKey: s.AdminKey}
	tok, err := ts.Token()
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Service.AuthenticateToken(context.Background(), tok.AccessToken)
	if err != nil || p.IAMID != s.Admin.IAMID || tok.TokenType != "Bearer" {
		t.Fatalf("token from the IBM client: %+v %v", p, err)
	}

	_, err = (&kpiam.IAMTokenSource{TokenURL: s.srv.URL + "/identity/token", APIKey: "not-a-key"}).Token()
	var iamErr kpiam.Error
	if !errors.As(err, &iamErr) || iamErr.ErrorCode != "BXNIM0415E" || iamErr.Context == nil || iamErr.Context.RequestID == "" ||
		iamErr.HTTPResponse.StatusCode != 400 {
		t.Fatalf("IBM client error: %#v", err)
	}
}
