package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleSyncGroup returns the member's assignment once the leader sent it.
func (c *conn) handleSyncGroup(ctx context.Context, r *kmsg.SyncGroupRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.SyncGroupResponse)
	if !c.may(GroupResource, r.Group, Reader) {
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp, nil
	}
	if ke := c.b.notCoordinator(); ke != nil {
		resp.ErrorCode = ke.Code
		return resp, nil
	}
	res, protoType, protocol := c.b.groups.sync(ctx, r)
	if res.err != nil {
		resp.ErrorCode = res.err.Code
		return resp, nil
	}
	resp.MemberAssignment = res.assignment
	resp.ProtocolType, resp.Protocol = &protoType, &protocol
	return resp, nil
}
