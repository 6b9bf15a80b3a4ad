package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleSASLHandshake accepts PLAIN (an API key) and OAUTHBEARER (an IAM
// access token). After a v0 handshake the client sends the PLAIN token
// without Kafka framing.
func (c *conn) handleSASLHandshake(_ context.Context, r *kmsg.SASLHandshakeRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.SASLHandshakeResponse)
	resp.SupportedMechanisms = []string{saslPlain, saslOAuthBearer}
	if r.Mechanism != saslPlain && r.Mechanism != saslOAuthBearer {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		return resp, nil
	}
	c.mechanism = r.Mechanism
	c.rawSASL = r.Version == 0
	return resp, nil
}
