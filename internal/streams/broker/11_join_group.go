package broker

import (
	"context"
	"net"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleJoinGroup blocks until the group's join phase ends.
func (c *conn) handleJoinGroup(ctx context.Context, r *kmsg.JoinGroupRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.JoinGroupResponse)
	resp.Generation = -1
	if !c.may(GroupResource, r.Group, Reader) {
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp, nil
	}
	if ke := c.b.notCoordinator(); ke != nil {
		resp.ErrorCode = ke.Code
		return resp, nil
	}
	host, _, _ := net.SplitHostPort(c.nc.RemoteAddr().String())
	res := c.b.groups.join(ctx, r, c.clientID, "/"+host)
	if res.err != nil {
		resp.ErrorCode = res.err.Code
	}
	resp.Generation, resp.LeaderID, resp.MemberID, resp.Members = res.generation, res.leader, res.memberID, res.members
	if res.err == nil {
		resp.Protocol = &res.protocol
		resp.ProtocolType = &res.protoType
	}
	return resp, nil
}
