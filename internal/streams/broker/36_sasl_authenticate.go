package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleSASLAuthenticate checks a login of the handshake's mechanism and
// tells v1+ clients how long it lasts. A refusal is answered with
// SASL_AUTHENTICATION_FAILED and the reason, then the connection closes.
func (c *conn) handleSASLAuthenticate(_ context.Context, r *kmsg.SASLAuthenticateRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	if c.mechanism == "" {
		resp.ErrorCode = kerr.IllegalSaslState.Code
		resp.ErrorMessage = kmsg.StringPtr("SaslHandshake must come first")
		c.closing = true
		return resp, nil
	}
	mechanism := c.mechanism
	c.mechanism = "" // a re-authentication starts with a new handshake
	if refusal := c.login(mechanism, r.SASLAuthBytes); refusal != "" {
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = &refusal
		c.closing = true
		return resp, nil
	}
	resp.SessionLifetimeMillis = c.sessionLifetime()
	return resp, nil
}
