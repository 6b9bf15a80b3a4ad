package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleLeaveGroup removes members (one before v3, a list from v3) and
// rebalances the rest.
func (c *conn) handleLeaveGroup(_ context.Context, r *kmsg.LeaveGroupRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.LeaveGroupResponse)
	if !c.may(GroupResource, r.Group, Reader) {
		resp.ErrorCode = kerr.GroupAuthorizationFailed.Code
		return resp, nil
	}
	if ke := c.b.notCoordinator(); ke != nil {
		resp.ErrorCode = ke.Code
		return resp, nil
	}
	if r.Version < 3 {
		if err := c.b.groups.leave(r.Group, []string{r.MemberID})[0]; err != nil {
			resp.ErrorCode = err.Code
		}
		return resp, nil
	}
	ids := make([]string, len(r.Members))
	for i, m := range r.Members {
		ids[i] = m.MemberID
	}
	for i, err := range c.b.groups.leave(r.Group, ids) {
		rm := kmsg.NewLeaveGroupResponseMember()
		rm.MemberID, rm.InstanceID = r.Members[i].MemberID, r.Members[i].InstanceID
		if err != nil {
			rm.ErrorCode = err.Code
		}
		resp.Members = append(resp.Members, rm)
	}
	return resp, nil
}
