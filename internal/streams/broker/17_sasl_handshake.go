package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleSASLHandshake accepts PLAIN only. After a v0 handshake the client
// sends the PLAIN token without Kafka framing.
func (c *conn) handleSASLHandshake(_ context.Context, r *kmsg.SASLHandshakeRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.SASLHandshakeResponse)
	resp.SupportedMechanisms = []string{"PLAIN"}
	if r.Mechanism != "PLAIN" {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		return resp, nil
	}
	c.mechanism = r.Mechanism
	c.rawSASL = r.Version == 0
	return resp, nil
}
