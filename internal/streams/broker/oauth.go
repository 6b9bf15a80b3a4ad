package broker

import (
	"bytes"
	"context"
	"errors"
	"strings"
)

// The SASL mechanisms the broker offers.
const (
	saslPlain       = "PLAIN"
	saslOAuthBearer = "OAUTHBEARER"
)

// OAuthBearer is the SASL OAUTHBEARER mechanism's name, as a KafkaLogin
// carries it.
const OAuthBearer = saslOAuthBearer

// parseCredentials reads a SASL token: PLAIN's "authzid\x00user\x00password"
// (RFC 4616) or OAUTHBEARER's client response
// "n,[a=authzid],\x01auth=Bearer <token>\x01[key=value\x01]\x01" (RFC 7628).
// A refusal never quotes the token.
func parseCredentials(mechanism string, token []byte) (Credentials, string) {
	switch mechanism {
	case saslPlain:
		parts := bytes.Split(token, []byte{0})
		if len(parts) != 3 || len(parts[1]) == 0 {
			return Credentials{}, "malformed SASL PLAIN credentials"
		}
		user, password := string(parts[1]), string(parts[2])
		if len(parts[0]) > 0 && string(parts[0]) != user {
			return Credentials{}, "authorization identity must be empty or equal the user name"
		}
		return Credentials{Mechanism: saslPlain, User: user, Secret: password}, ""
	case saslOAuthBearer:
		gs2, rest, ok := strings.Cut(string(token), "\x01")
		if !ok || !strings.HasPrefix(gs2, "n,") || !strings.HasSuffix(rest, "\x01") {
			return Credentials{}, "malformed SASL OAUTHBEARER message: expected a GS2 header \"n,,\" and \\x01-separated key=value pairs"
		}
		bearer := ""
		for _, kv := range strings.Split(strings.TrimSuffix(rest, "\x01"), "\x01") {
			if k, v, _ := strings.Cut(kv, "="); k == "auth" {
				scheme, tok, _ := strings.Cut(v, " ")
				if !strings.EqualFold(scheme, "Bearer") {
					return Credentials{}, "malformed SASL OAUTHBEARER message: auth must be \"Bearer <IAM access token>\""
				}
				bearer = strings.TrimSpace(tok)
			}
		}
		if bearer == "" {
			return Credentials{}, "malformed SASL OAUTHBEARER message: no auth=Bearer <IAM access token>"
		}
		return Credentials{Mechanism: saslOAuthBearer, Secret: bearer}, ""
	}
	return Credentials{}, "unsupported SASL mechanism"
}

// plainLogin adapts an Authenticator of PLAIN logins to a LoginChecker:
// its access is on the whole instance and never expires.
func plainLogin(auth Authenticator) LoginChecker {
	return func(ctx context.Context, cr Credentials) (Login, error) {
		if cr.Mechanism != saslPlain {
			return Login{}, errors.New("this broker accepts SASL PLAIN logins only")
		}
		a, err := auth(ctx, cr.User, cr.Secret)
		return Login{Access: a}, err
	}
}

// sessionLifetime is what SaslAuthenticate v1+ tells the client: how long
// its login lasts (0: until the connection closes), so that it
// re-authenticates on the connection before then (KIP-368).
func (c *conn) sessionLifetime() int64 {
	s := c.sess.Load()
	if s == nil || s.expires.IsZero() {
		return 0
	}
	return max(1, s.expires.Sub(c.b.clock.Now()).Milliseconds())
}

// loginExpired reports whether the connection's login (an IAM access token)
// expired without a re-authentication: its next request closes it.
func (c *conn) loginExpired() bool {
	s := c.sess.Load()
	return s != nil && !s.expires.IsZero() && !c.b.clock.Now().Before(s.expires)
}
