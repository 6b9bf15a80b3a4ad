package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleFindCoordinator points every group and every transactional id at
// the leader: it coordinates them all. While no leader is known the answer
// is COORDINATOR_NOT_AVAILABLE, which clients retry.
func (c *conn) handleFindCoordinator(_ context.Context, r *kmsg.FindCoordinatorRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
	answer := func(key string) (code int16, node int32, host string, port int32) {
		switch {
		case r.CoordinatorType > 1: // 0 group, 1 transaction, 2 share
			code = kerr.CoordinatorNotAvailable.Code
		case r.CoordinatorType == 1 && !c.may(TxnIDResource, key, Reader):
			code = kerr.TransactionalIDAuthorizationFailed.Code
		case r.CoordinatorType == 0 && !c.may(GroupResource, key, Reader):
			code = kerr.GroupAuthorizationFailed.Code
		default:
			if a, ok := c.b.leaderAddr(); ok {
				return 0, a.NodeID, a.Host, a.Port
			}
			code = kerr.CoordinatorNotAvailable.Code
		}
		return code, -1, "", -1
	}
	if r.Version < 4 {
		resp.ErrorCode, resp.NodeID, resp.Host, resp.Port = answer(r.CoordinatorKey)
		return resp, nil
	}
	for _, key := range r.CoordinatorKeys {
		rc := kmsg.NewFindCoordinatorResponseCoordinator()
		rc.Key = key
		rc.ErrorCode, rc.NodeID, rc.Host, rc.Port = answer(key)
		resp.Coordinators = append(resp.Coordinators, rc)
	}
	return resp, nil
}
