package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDescribeGroups reports groups' state and members; an unknown group
// is "Dead", as in Kafka.
func (c *conn) handleDescribeGroups(_ context.Context, r *kmsg.DescribeGroupsRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.DescribeGroupsResponse)
	for _, name := range r.Groups {
		rg := kmsg.NewDescribeGroupsResponseGroup()
		rg.Group = name
		if !c.may(GroupResource, name, Reader) {
			rg.ErrorCode = kerr.GroupAuthorizationFailed.Code
			resp.Groups = append(resp.Groups, rg)
			continue
		}
		if ke := c.b.notCoordinator(); ke != nil {
			rg.ErrorCode = ke.Code
			resp.Groups = append(resp.Groups, rg)
			continue
		}
		v := c.b.groups.describe(name)
		rg.State, rg.ProtocolType, rg.Protocol, rg.Members = string(v.state), v.protoType, v.protocol, v.members
		resp.Groups = append(resp.Groups, rg)
	}
	return resp, nil
}
