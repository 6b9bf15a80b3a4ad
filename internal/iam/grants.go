package iam

import (
	"context"
	"strings"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
)

// opStringMatch is the operator of a resource attribute whose value ends in
// a wildcard: "*" matches every name, "orders-*" every name it prefixes.
const opStringMatch = "stringMatch"

// ResourceGrants lists what the principal's active access policies scoped
// to a resource type give it within r's service instance (r names the
// instance; its ResourceType and ResourceID are ignored). Policies on the
// whole instance are not listed: Authorize answers for them. A service
// that decides many requests per login (the Kafka broker) calls it once
// per login and matches names itself.
func (s *Service) ResourceGrants(ctx context.Context, p *auth.Principal, r auth.Resource) ([]auth.Grant, error) {
	const op = "iam.ResourceGrants"
	if p == nil {
		return nil, errs.E(op, errs.Unauthenticated, "BXNIM0308E", "No authorization header found")
	}
	if p.Type != auth.User && p.Type != auth.ServiceID {
		return nil, nil
	}
	var out []auth.Grant
	for _, pol := range s.policies.Load().bySubject["iam:"+p.IAMID] {
		typ := pol.ResourceAttr("resourceType")
		if pol.Type != TypeAccess || typ == "" {
			continue
		}
		scoped := r
		scoped.ResourceType, scoped.ResourceID = typ, pol.ResourceAttr("resource")
		if !pol.resourceCovers(scoped) {
			continue
		}
		g := auth.Grant{ResourceType: typ, Resource: scoped.ResourceID}
		for _, role := range pol.Roles {
			g.Actions = append(g.Actions, accessActions(r.ServiceName, role.RoleID)...)
		}
		out = append(out, g)
	}
	return out, nil
}

// attributeMatches reports whether a resource attribute's value covers
// got: equal, or for stringMatch a prefix followed by "*".
func attributeMatches(a ResourceAttribute, got string) bool {
	if a.Operator == opStringMatch && strings.HasSuffix(a.Value, "*") {
		return strings.HasPrefix(got, a.Value[:len(a.Value)-1])
	}
	return got == a.Value
}

// checkScopedResource checks what a policy's resource says of its type and
// name: a wildcard only as the end of the resource name, and for Event
// Streams one of its resource types, the cluster having no name.
func checkScopedResource(op string, res *PolicyResource) error {
	attr := func(name string) *ResourceAttribute {
		for i := range res.Attributes {
			if res.Attributes[i].Name == name {
				return &res.Attributes[i]
			}
		}
		return nil
	}
	if r := attr("resource"); r != nil {
		wild := strings.HasSuffix(r.Value, "*")
		switch {
		case strings.ContainsAny(strings.TrimSuffix(r.Value, "*"), "*?"):
			return invalidBody(op, "resources[0] attribute resource: a wildcard * may only end the value (orders-* or *)")
		case wild && r.Operator == "stringEquals":
			return invalidBody(op, "resources[0] attribute resource: a value with a wildcard needs the operator stringMatch")
		case wild:
			r.Operator = opStringMatch
		}
	}
	svc, typ := attr("serviceName"), attr("resourceType")
	if svc == nil || svc.Value != "messagehub" || typ == nil {
		return nil
	}
	known := false
	for _, t := range auth.StreamsResourceTypes {
		known = known || t == typ.Value
	}
	if !known {
		return invalidBody(op, "resources[0] attribute resourceType %q is not an Event Streams resource type: use %s", typ.Value, strings.Join(auth.StreamsResourceTypes, ", "))
	}
	if typ.Value == "cluster" && attr("resource") != nil {
		return invalidBody(op, "resources[0]: a policy on the Event Streams cluster names no resource")
	}
	return nil
}
