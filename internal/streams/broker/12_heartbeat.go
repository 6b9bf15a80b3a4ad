package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleHeartbeat keeps a member alive and tells it when to rejoin.
func (c *conn) handleHeartbeat(_ context.Context, r *kmsg.HeartbeatRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.HeartbeatResponse)
	if !c.may(GroupResource, r.Group, Reader) {
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp, nil
	}
	if ke := c.b.notCoordinator(); ke != nil {
		resp.ErrorCode = ke.Code
		return resp, nil
	}
	if err := c.b.groups.heartbeat(r); err != nil {
		resp.ErrorCode = err.Code
	}
	return resp, nil
}
