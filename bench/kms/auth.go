package main

import (
	"context"
	"fmt"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/kms/kmstest"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// benchAuth is who the bench calls as and what verifies it.
type benchAuth struct {
	authn   auth.Authenticator
	authz   auth.Authorizer
	account string
	token   string          // bearer token of a Writer on the instance
	caller  *auth.Principal // the same caller, for in-process setup
	grant   func(instance string) error
}

// newAuth returns Keyline's IAM ("iam": signed tokens, policies) or a fixed
// table ("table": the KMS's own cost only).
func newAuth(ctx context.Context, db *store.DB, master *seal.AEAD, log *audit.Log, kind string) (*benchAuth, error) {
	switch kind {
	case "table":
		authn, authz := kmstest.NewAuthn(), kmstest.NewAuthz()
		p := &auth.Principal{IAMID: "IBMid-bench", AccountID: "bench-account", Type: auth.User}
		authn.Add("bench-token", p)
		return &benchAuth{authn: authn, authz: authz, account: p.AccountID, token: "bench-token", caller: p,
			grant: func(instance string) error {
				authz.Allow(p.IAMID, kmstest.Grant{Role: auth.RoleWriter, Instance: instance})
				return nil
			}}, nil
	case "iam":
		if log == nil {
			return nil, fmt.Errorf("-auth iam needs -audit at")
		}
		svc, err := iam.New(ctx, iam.Config{DB: db, Master: master, Audit: log, Clock: clock.Real{}})
		if err != nil {
			return nil, err
		}
		account, key, _, err := svc.Bootstrap(ctx, "")
		if err != nil {
			return nil, err
		}
		tok, err := svc.Token(ctx, iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: key})
		if err != nil {
			return nil, err
		}
		admin, err := svc.AuthenticateAPIKey(ctx, key)
		if err != nil {
			return nil, err
		}
		return &benchAuth{authn: svc, authz: svc, account: account.ID, token: tok.AccessToken, caller: admin,
			grant: func(instance string) error {
				r := auth.Resource{AccountID: account.ID, ServiceName: "kms", ServiceInstance: instance}
				_, err := svc.CreatePolicy(auth.WithPrincipal(ctx, admin), iam.PolicyRequest{Type: iam.TypeAccess,
					Subjects:  []iam.PolicySubject{{Attributes: []iam.SubjectAttribute{{Name: "iam_id", Value: admin.IAMID}}}},
					Resources: []iam.PolicyResource{{Attributes: iam.ResourceAttributes(r)}},
					Roles:     []iam.PolicyRole{{RoleID: auth.RoleWriter}}})
				return err
			}}, nil
	}
	return nil, fmt.Errorf("unknown -auth %q (iam, table)", kind)
}
