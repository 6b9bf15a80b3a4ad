package broker

import (
	"context"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleAddOffsetsToTxn adds a group to the producer's transaction: the
// offsets TxnOffsetCommit then sends for it are applied on commit.
func (c *conn) handleAddOffsetsToTxn(_ context.Context, r *kmsg.AddOffsetsToTxnRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.AddOffsetsToTxnResponse)
	if kerrr := c.addOffsetsToTxn(r); kerrr != nil {
		resp.ErrorCode = kerrr.Code
	}
	return resp, nil
}

func (c *conn) addOffsetsToTxn(r *kmsg.AddOffsetsToTxnRequest) *kerr.Error {
	if kerrr := c.txnAllowed(r.TransactionalID); kerrr != nil {
		return kerrr
	}
	if r.Group == "" {
		return kerr.InvalidGroupID
	}
	if !c.may(GroupResource, r.Group, Reader) {
		return kerr.GroupAuthorizationFailed
	}
	if kerrr := c.b.notCoordinator(); kerrr != nil {
		return kerrr
	}
	tc := c.b.txns
	t, kerrr := tc.lookup(r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Version >= 2)
	if kerrr != nil {
		return kerrr
	}
	defer t.mu.Unlock()
	if slices.Contains(t.rec.Groups, r.Group) {
		return nil
	}
	tc.begin(t)
	t.rec.Groups = append(t.rec.Groups, r.Group)
	if err := tc.save(t); err != nil {
		c.log.Error("storing a transaction failed", "err", err)
		return kerr.CoordinatorNotAvailable
	}
	return nil
}
