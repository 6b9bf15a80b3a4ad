package broker

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDescribeClientQuotas lists the quotas set whose entities match the
// filter (KIP-546). It takes the Reader role on the cluster, as describing
// the broker's configs does. The plan's defaults are not entities and are
// not listed.
func (c *conn) handleDescribeClientQuotas(_ context.Context, r *kmsg.DescribeClientQuotasRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.DescribeClientQuotasResponse)
	if !c.may(ClusterResource, "", Reader) {
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr("describing client quotas needs the Reader role on the cluster")
		return resp, nil
	}
	filter, msg := parseQuotaFilter(r.Components)
	if msg != "" {
		resp.ErrorCode, resp.ErrorMessage = kerr.InvalidRequest.Code, kmsg.StringPtr(msg)
		return resp, nil
	}
	if c.b.follows() {
		// A follower's view has the leader's latest quotas; its book was
		// read when it started.
		if err := c.b.quotas.reload(); err != nil {
			c.log.Error("reading client quotas failed", "err", err)
			resp.ErrorCode = kerr.UnknownServerError.Code
			return resp, nil
		}
	}
	for e, values := range c.b.quotas.entries() {
		if !filter.matches(e, r.Strict) {
			continue
		}
		var re kmsg.DescribeClientQuotasResponseEntry
		name := func(n string) *string {
			if n == "" {
				return nil // the default
			}
			return kmsg.StringPtr(n)
		}
		if e.HasUser {
			re.Entity = append(re.Entity, kmsg.DescribeClientQuotasResponseEntryEntity{Type: quotaUser, Name: name(e.User)})
		}
		if e.HasClient {
			re.Entity = append(re.Entity, kmsg.DescribeClientQuotasResponseEntryEntity{Type: quotaClientID, Name: name(e.Client)})
		}
		for k, v := range values {
			re.Values = append(re.Values, kmsg.DescribeClientQuotasResponseEntryValue{Key: k, Value: v})
		}
		slices.SortFunc(re.Values, func(a, b kmsg.DescribeClientQuotasResponseEntryValue) int { return cmp.Compare(a.Key, b.Key) })
		resp.Entries = append(resp.Entries, re)
	}
	slices.SortFunc(resp.Entries, func(a, b kmsg.DescribeClientQuotasResponseEntry) int {
		return cmp.Compare(describedEntity(a.Entity), describedEntity(b.Entity))
	})
	return resp, nil
}

func describedEntity(es []kmsg.DescribeClientQuotasResponseEntryEntity) string {
	return entityString(es, func(e kmsg.DescribeClientQuotasResponseEntryEntity) (string, *string) { return e.Type, e.Name })
}

// quotaMatch is one component of a filter: for its entity type, a name
// (exact), the default, or any.
type quotaMatch struct {
	set       bool
	matchType kmsg.QuotasMatchType
	name      string
}

func (m quotaMatch) matches(has bool, name string, strict bool) bool {
	if !m.set {
		return !has || !strict
	}
	if !has {
		return false
	}
	switch m.matchType {
	case kmsg.QuotasMatchTypeExact:
		return name == m.name
	case kmsg.QuotasMatchTypeDefault:
		return name == ""
	}
	return true // any name, the default among them
}

type quotaFilter struct {
	user, client quotaMatch
	ip           bool // no entity has an ip: such a filter matches nothing
}

func (f quotaFilter) matches(e quotaEntity, strict bool) bool {
	return !f.ip && f.user.matches(e.HasUser, e.User, strict) && f.client.matches(e.HasClient, e.Client, strict)
}

// parseQuotaFilter checks a filter's components: each entity type once, a
// name with an exact match only. An ip component matches nothing, no ip
// quota being set on this broker.
func parseQuotaFilter(comps []kmsg.DescribeClientQuotasRequestComponent) (quotaFilter, string) {
	var f quotaFilter
	seen := map[string]bool{}
	for _, c := range comps {
		if seen[c.EntityType] {
			return f, fmt.Sprintf("Duplicate entity type %s in the filter", c.EntityType)
		}
		seen[c.EntityType] = true
		m := quotaMatch{set: true, matchType: c.MatchType}
		switch c.MatchType {
		case kmsg.QuotasMatchTypeExact:
			if c.Match == nil || *c.Match == "" {
				return f, fmt.Sprintf("an exact match of %s needs a name", c.EntityType)
			}
			m.name = *c.Match
		case kmsg.QuotasMatchTypeDefault, kmsg.QuotasMatchTypeAny:
			if c.Match != nil {
				return f, fmt.Sprintf("a %s match of %s takes no name", c.MatchType, c.EntityType)
			}
		default:
			return f, fmt.Sprintf("Unknown match type %d", c.MatchType)
		}
		switch c.EntityType {
		case quotaUser:
			f.user = m
		case quotaClientID:
			f.client = m
		case quotaIP:
			f.ip = true
		default:
			return f, fmt.Sprintf("Custom entity type '%s' not supported", c.EntityType)
		}
	}
	return f, ""
}
