package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDeleteGroups deletes groups that have no members, with their
// committed offsets; deleting is for Managers.
func (c *conn) handleDeleteGroups(_ context.Context, r *kmsg.DeleteGroupsRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.DeleteGroupsResponse)
	for _, name := range r.Groups {
		rg := kmsg.NewDeleteGroupsResponseGroup()
		rg.Group = name
		var ke *kerr.Error
		if !c.may(GroupResource, name, Manager) {
			ke = kerr.GroupAuthorizationFailed
		} else if ke = c.b.notCoordinator(); ke == nil {
			ke = c.b.groups.deleteGroup(name)
		}
		if ke != nil {
			rg.ErrorCode = ke.Code
		}
		resp.Groups = append(resp.Groups, rg)
	}
	return resp, nil
}
