package broker

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// bearerLogins accepts OAUTHBEARER tokens until their expiry on clock, as
// IAM checks its access tokens.
type bearerLogins struct {
	clock   Clock
	expires map[string]time.Time
}

func (b *bearerLogins) check(_ context.Context, cr Credentials) (Login, error) {
	exp, ok := b.expires[cr.Secret]
	if cr.Mechanism != saslOAuthBearer || !ok || !b.clock.Now().Before(exp) {
		return Login{}, errors.New("the IAM access token is not valid or has expired")
	}
	return Login{Access: Writer, Expires: exp, Principal: principalOf(cr.Secret)}, nil
}

// principalOf is whose token it is: "intruder-..." tokens are someone else's.
func principalOf(token string) string {
	if strings.HasPrefix(token, "intruder-") {
		return "iam-intruder"
	}
	return "iam-dev"
}

// bearerLogin runs SaslHandshake and SaslAuthenticate v1 with token on rc.
func (rc *rawConn) bearerLogin(token string, corr int32) *kmsg.SASLAuthenticateResponse {
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, saslOAuthBearer
	rc.send(hs, corr)
	hsResp := hs.ResponseKind().(*kmsg.SASLHandshakeResponse)
	if err := rc.recv(hsResp, false); err != nil || hsResp.ErrorCode != 0 {
		rc.t.Fatalf("handshake: %v code %d", err, hsResp.ErrorCode)
	}
	auth := kmsg.NewPtrSASLAuthenticateRequest()
	auth.Version, auth.SASLAuthBytes = 1, []byte("n,,\x01auth=Bearer "+token+"\x01\x01")
	rc.send(auth, corr+1)
	resp := auth.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	if err := rc.recv(resp, false); err != nil {
		rc.t.Fatal(err)
	}
	return resp
}

// metadata sends a Metadata v1 request and reports whether it was answered.
func (rc *rawConn) metadata(corr int32) bool {
	req := kmsg.NewPtrMetadataRequest()
	req.Version = 1
	rc.send(req, corr)
	return rc.recv(req.ResponseKind(), false) == nil
}

func TestOAuthBearerSessionLifetimeAndReauthentication(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	logins := &bearerLogins{clock: clock, expires: map[string]time.Time{
		"token-1": clock.Now().Add(time.Hour), "token-2": clock.Now().Add(3 * time.Hour)}}
	tb := startBroker(t, nil, func(c *Config) { c.Login, c.Clock, c.Reauthorize = logins.check, clock, time.Hour })

	rc := dialRaw(t, tb)
	resp := rc.bearerLogin("token-1", 1)
	if resp.ErrorCode != 0 || resp.SessionLifetimeMillis != time.Hour.Milliseconds() {
		t.Fatalf("login: code %d, session lifetime %d ms, want %d", resp.ErrorCode, resp.SessionLifetimeMillis, time.Hour.Milliseconds())
	}
	clock.Advance(50 * time.Minute)
	if !rc.metadata(3) {
		t.Fatal("a request before the token expires is not answered")
	}
	// KIP-368: the client re-authenticates on the same connection before
	// its session ends, and the new token's lifetime applies.
	if resp := rc.bearerLogin("token-2", 4); resp.ErrorCode != 0 || resp.SessionLifetimeMillis != (130*time.Minute).Milliseconds() {
		t.Fatalf("re-authentication: code %d, session lifetime %d ms", resp.ErrorCode, resp.SessionLifetimeMillis)
	}
	clock.Advance(time.Hour) // past token-1's expiry, not token-2's
	if !rc.metadata(6) {
		t.Fatal("a request after re-authenticating is not answered")
	}
	clock.Advance(2 * time.Hour)
	rc.metadata(7)
	if !rc.closed() {
		t.Fatal("a request after the session expired was answered; want the connection closed")
	}
}

func TestReauthenticationKeepsThePrincipal(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	logins := &bearerLogins{clock: clock, expires: map[string]time.Time{
		"token-1": clock.Now().Add(time.Hour), "token-2": clock.Now().Add(time.Hour), "intruder-token": clock.Now().Add(time.Hour)}}
	tb := startBroker(t, nil, func(c *Config) { c.Login, c.Clock = logins.check, clock })
	rc := dialRaw(t, tb)
	if resp := rc.bearerLogin("token-1", 1); resp.ErrorCode != 0 {
		t.Fatalf("login: code %d", resp.ErrorCode)
	}
	if resp := rc.bearerLogin("token-2", 3); resp.ErrorCode != 0 {
		t.Fatalf("re-authentication as the same principal: code %d", resp.ErrorCode)
	}
	resp := rc.bearerLogin("intruder-token", 5)
	if resp.ErrorCode != kerr.SaslAuthenticationFailed.Code || resp.ErrorMessage == nil || !strings.Contains(*resp.ErrorMessage, "must keep the identity") {
		t.Fatalf("re-authentication as another principal: code %d %v", resp.ErrorCode, resp.ErrorMessage)
	}
	if !rc.closed() {
		t.Fatal("the connection stays open after a refused re-authentication")
	}
}

func TestOAuthBearerRefusals(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	logins := &bearerLogins{clock: clock, expires: map[string]time.Time{"expired-token": clock.Now().Add(-time.Second)}}
	tb := startBroker(t, nil, func(c *Config) { c.Login, c.Clock = logins.check, clock })
	tests := []struct {
		name, message, want string
	}{
		{"an expired token", "n,,\x01auth=Bearer expired-token\x01\x01", "not valid or has expired"},
		{"no GS2 header", "auth=Bearer expired-token\x01\x01", "malformed SASL OAUTHBEARER message"},
		{"another scheme", "n,,\x01auth=Basic expired-token\x01\x01", `auth must be "Bearer <IAM access token>"`},
		{"no token", "n,,\x01host=x\x01\x01", "no auth=Bearer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := dialRaw(t, tb)
			hs := kmsg.NewPtrSASLHandshakeRequest()
			hs.Version, hs.Mechanism = 1, saslOAuthBearer
			rc.send(hs, 1)
			if err := rc.recv(hs.ResponseKind(), false); err != nil {
				t.Fatal(err)
			}
			auth := kmsg.NewPtrSASLAuthenticateRequest()
			auth.Version, auth.SASLAuthBytes = 1, []byte(tt.message)
			rc.send(auth, 2)
			resp := auth.ResponseKind().(*kmsg.SASLAuthenticateResponse)
			if err := rc.recv(resp, false); err != nil {
				t.Fatal(err)
			}
			msg := ""
			if resp.ErrorMessage != nil {
				msg = *resp.ErrorMessage
			}
			if resp.ErrorCode != kerr.SaslAuthenticationFailed.Code || !strings.Contains(msg, tt.want) || strings.Contains(msg, "expired-token") {
				t.Fatalf("code %d message %q: want SASL_AUTHENTICATION_FAILED saying %q without the token", resp.ErrorCode, msg, tt.want)
			}
			if !rc.closed() {
				t.Fatal("the connection stays open after a refused login")
			}
		})
	}
}

// A PLAIN-only broker (an Authenticator) refuses OAUTHBEARER plainly.
func TestPlainOnlyBrokerRefusesOAuthBearer(t *testing.T) {
	tb := startBroker(t, nil)
	rc := dialRaw(t, tb)
	if resp := rc.bearerLogin("whatever", 1); resp.ErrorCode != kerr.SaslAuthenticationFailed.Code {
		t.Fatalf("code %d, want SASL_AUTHENTICATION_FAILED", resp.ErrorCode)
	}
}
