package broker

import (
	"context"
	"slices"
	"strings"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleListGroups lists groups, filtered by state (v4+) and type (v5+).
// A Kafka broker lists the groups it coordinates (admin clients ask every
// broker): a follower coordinates none.
func (c *conn) handleListGroups(_ context.Context, r *kmsg.ListGroupsRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.ListGroupsResponse)
	if c.b.follows() {
		return resp, nil
	}
	for _, v := range c.b.groups.list() {
		if !c.may(GroupResource, v.name, Reader) { // as Kafka, list only what the caller may describe
			continue
		}
		if len(r.StatesFilter) > 0 && !slices.ContainsFunc(r.StatesFilter, func(s string) bool { return strings.EqualFold(s, string(v.state)) }) {
			continue
		}
		if len(r.TypesFilter) > 0 && !slices.ContainsFunc(r.TypesFilter, func(s string) bool { return strings.EqualFold(s, "classic") }) {
			continue
		}
		lg := kmsg.NewListGroupsResponseGroup()
		lg.Group, lg.ProtocolType, lg.GroupState, lg.GroupType = v.name, v.protoType, string(v.state), "classic"
		resp.Groups = append(resp.Groups, lg)
	}
	return resp, nil
}
