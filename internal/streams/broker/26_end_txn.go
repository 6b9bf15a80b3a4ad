package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleEndTxn commits or aborts the producer's transaction: markers to
// each partition, then, on commit, its groups' offsets.
func (c *conn) handleEndTxn(ctx context.Context, r *kmsg.EndTxnRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.EndTxnResponse)
	kerrr := c.txnAllowed(r.TransactionalID)
	if kerrr == nil {
		kerrr = c.b.notCoordinator()
	}
	if kerrr == nil {
		kerrr = c.b.txns.end(ctx, r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Commit, r.Version >= 2)
	}
	if kerrr != nil {
		resp.ErrorCode = kerrr.Code
	}
	return resp, nil
}
