package iam_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/iam/iamtest"
)

// BenchmarkAuthorize measures a decision among 1,000 access policies and
// 100 authorizations, as KMS makes on every call.
func BenchmarkAuthorize(b *testing.B) {
	e := iamtest.New(b)
	u, _ := e.NewUser(b, "bench@example.com")
	for i := range 1000 {
		e.Grant(b, u.IAMID, kmsInstance(e, fmt.Sprintf("kp-%d", i)), auth.RoleWriter)
	}
	for i := range 100 {
		e.Authorize(b, "messagehub", fmt.Sprintf("es-%d", i), kmsInstance(e, fmt.Sprintf("kp-%d", i)), auth.RoleReader)
	}
	ctx := context.Background()
	key := kmsInstance(e, "kp-999")
	key.ResourceType, key.ResourceID = "key", "k"
	es := messagehub(e, "es-99")
	b.Run("user", func(b *testing.B) {
		for b.Loop() {
			if err := e.Service.Authorize(ctx, u, auth.KMSKeyWrap, key); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("service", func(b *testing.B) {
		for b.Loop() {
			if err := e.Service.Authorize(ctx, es, auth.KMSKeyWrap, kmsInstance(e, "kp-99")); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("denied", func(b *testing.B) {
		for b.Loop() {
			if err := e.Service.Authorize(ctx, u, auth.KMSKeyDelete, key); err == nil {
				b.Fatal("allowed")
			}
		}
	})
}

// BenchmarkAuthenticateToken measures bearer token checks: cached (every call
// after the first) and a first sight (RSA verification and a database read).
func BenchmarkAuthenticateToken(b *testing.B) {
	e := iamtest.New(b)
	ctx := context.Background()
	tok, err := e.Service.Token(ctx, iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: e.AdminKey})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.Service.AuthenticateToken(ctx, tok.AccessToken); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("first", func(b *testing.B) {
		// Each token is seen once, so each costs an RSA verification and a
		// database read; minting them is left out of the measurement.
		b.StopTimer()
		tokens := make([]string, b.N)
		for i := range tokens {
			t, err := e.Service.Token(ctx, iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: e.AdminKey})
			if err != nil {
				b.Fatal(err)
			}
			tokens[i] = t.AccessToken
		}
		b.StartTimer()
		for _, t := range tokens {
			if _, err := e.Service.AuthenticateToken(ctx, t); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("apikey", func(b *testing.B) {
		for b.Loop() {
			if _, err := e.Service.AuthenticateAPIKey(ctx, e.AdminKey); err != nil {
				b.Fatal(err)
			}
		}
	})
}
