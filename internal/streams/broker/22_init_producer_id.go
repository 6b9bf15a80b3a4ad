package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleInitProducerID gives an idempotent producer a fresh id at epoch 0,
// and a transactional one its id at a new epoch (txn.go).
func (c *conn) handleInitProducerID(ctx context.Context, r *kmsg.InitProducerIDRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.InitProducerIDResponse)
	resp.ProducerID, resp.ProducerEpoch = -1, -1
	switch {
	case r.TransactionalID != nil:
		if kerrr := c.txnAllowed(*r.TransactionalID); kerrr != nil {
			resp.ErrorCode = kerrr.Code
			return resp, nil
		}
		if kerrr := c.b.notCoordinator(); kerrr != nil {
			resp.ErrorCode = kerrr.Code
			return resp, nil
		}
		var kerrr *kerr.Error
		resp.ProducerID, resp.ProducerEpoch, kerrr = c.b.txns.initProducer(ctx, *r.TransactionalID, r.TransactionTimeoutMillis, r.ProducerID, r.ProducerEpoch, r.Version >= 4)
		if kerrr != nil {
			resp.ErrorCode = kerrr.Code
		}
	case !c.mayAny(TopicResource, Writer) && !c.may(ClusterResource, "", Writer):
		// Kafka lets a producer that may write some topic be idempotent.
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
	case c.b.notCoordinator() != nil && c.b.cfg.AllocateProducerID == nil:
		// Producer ids are allocated in the leader's storage; clients
		// send this request to another broker on a retriable error.
		resp.ErrorCode = c.b.notCoordinator().Code
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
