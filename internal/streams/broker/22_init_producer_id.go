package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleInitProducerID gives an idempotent producer a fresh id at epoch 0.
// Transactions are not supported.
func (c *conn) handleInitProducerID(_ context.Context, r *kmsg.InitProducerIDRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	switch {
	case r.TransactionalID != nil && !c.authorizeTxnID(*r.TransactionalID):
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
	case r.TransactionalID == nil && !c.mayAny(TopicResource, Writer) && !c.may(ClusterResource, "", Writer):
		// Kafka lets a producer that may write some topic be idempotent.
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
	case r.TransactionalID != nil:
		resp.ErrorCode = kerr.UnsupportedVersion.Code // transactions are not supported (yet)
	default:
		id, err := c.b.producers.next()
		if err != nil {
			c.log.Error("allocating a producer id failed", "err", err)
			resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
			return resp, nil
		}
		resp.ProducerID, resp.ProducerEpoch = id, 0
	}
	return resp, nil
}
