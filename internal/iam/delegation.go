package iam

import (
	"context"
	"slices"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
)

// CreateDependentAuthorization lets a source service (e.g. messagehub acting
// for a deployment) authorize one of its dependent services (e.g. "is",
// block storage for its backups) on the same target: allowed only while an
// active authorization grants the source AuthorizationDelegator on a
// resource covering target. The new authorization's subject is the
// dependent service in the source's account, its role Reader, its resource
// target, and it is created by "crn-<source CRN>". An identical active
// authorization is returned as it is, so re-creating is idempotent.
func (s *Service) CreateDependentAuthorization(ctx context.Context, source *auth.Principal, dependentService string, target auth.Resource, role string) (Policy, error) {
	const op = "iam.CreateDependentAuthorization"
	if source == nil || source.Type != auth.Service || source.ServiceName == "" || source.SourceCRN == "" || source.AccountID == "" {
		return Policy{}, errs.E(op, errs.Permission, "access_denied", "Only a service acting for one of its instances can create authorizations for its dependent services")
	}
	if role != auth.RoleReader {
		return Policy{}, errs.Ef(op, errs.Invalid, "invalid_body", "A dependent service can only be granted %s", auth.RoleReader)
	}
	if dependentService == "" || dependentService == source.ServiceName {
		return Policy{}, errs.E(op, errs.Invalid, "invalid_body", "The dependent service must be another service than the source")
	}
	if target.AccountID == "" || target.ServiceName == "" {
		return Policy{}, errs.E(op, errs.Invalid, "invalid_body", "The target needs an account and a service name")
	}
	req := PolicyRequest{Type: TypeAuthorization, Roles: []PolicyRole{{RoleID: auth.RoleReader}},
		Subjects: []PolicySubject{{Attributes: []SubjectAttribute{
			{Name: "accountId", Value: source.AccountID}, {Name: "serviceName", Value: dependentService}}}},
		Resources: []PolicyResource{{Attributes: ResourceAttributes(target)}}}
	p, err := s.normalize(op, req)
	if err != nil {
		return Policy{}, err
	}
	ctx = auth.WithPrincipal(ctx, source)
	if !s.delegates(source, target) {
		err := errs.Ef(op, errs.Permission, "access_denied",
			"%s cannot authorize %s on %s: no active authorization grants %s the Authorization Delegator role on it",
			describePrincipal(source), dependentService, describeResource(target), source.ServiceName)
		s.recordFailure(ctx, "iam-am.policy.create", policyTarget(p), err)
		return Policy{}, err
	}
	return s.createPolicy(ctx, p, "crn-"+source.SourceCRN, true)
}

// delegates reports whether an active authorization lets source delegate on target.
func (s *Service) delegates(source *auth.Principal, target auth.Resource) bool {
	for _, pol := range s.policies.Load().bySubject["svc:"+source.ServiceName] {
		if pol.Type == TypeAuthorization && pol.HasRole(auth.RoleAuthorizationDelegator) &&
			pol.subjectCovers(source) && pol.resourceCovers(target) {
			return true
		}
	}
	return false
}

// ResourceAttributes names r in policy resource attributes, leaving out
// what r leaves empty.
func ResourceAttributes(r auth.Resource) []ResourceAttribute {
	attrs := []ResourceAttribute{{Name: "accountId", Value: r.AccountID}}
	for _, a := range []ResourceAttribute{{Name: "serviceName", Value: r.ServiceName}, {Name: "serviceInstance", Value: r.ServiceInstance},
		{Name: "resourceType", Value: r.ResourceType}, {Name: "resource", Value: r.ResourceID}} {
		if a.Value != "" {
			attrs = append(attrs, a)
		}
	}
	return attrs
}

// ListAuthorizations lists the active authorizations of an account that the
// caller may read, filtered by source and target service when given.
func (s *Service) ListAuthorizations(ctx context.Context, accountID string, f PolicyFilter) ([]Policy, error) {
	f.AccountID, f.Type, f.Start = accountID, TypeAuthorization, ""
	var out []Policy
	for {
		f.Limit = 100
		page, err := s.ListPolicies(ctx, f)
		if err != nil {
			return nil, err
		}
		out = append(out, page.Policies...)
		if page.Next == "" {
			return out, nil
		}
		f.Start = page.Next
	}
}

// DeleteAuthorization deletes an authorization (softly, like every policy).
func (s *Service) DeleteAuthorization(ctx context.Context, id string) error {
	const op = "iam.DeleteAuthorization"
	p, err := s.policy(op, id)
	if err != nil {
		return err
	}
	if p.Type != TypeAuthorization {
		return errs.Ef(op, errs.NotExist, "policy_not_found", "Authorization %s was not found", id)
	}
	return s.DeletePolicy(ctx, id)
}

// DeleteAuthorizationsCreatedBy deletes the active authorizations that the
// source instance sourceCRN created for its dependent services: when the
// instance is deleted, what it delegated goes with it.
func (s *Service) DeleteAuthorizationsCreatedBy(ctx context.Context, source *auth.Principal) error {
	const op = "iam.DeleteAuthorizationsCreatedBy"
	if source == nil || source.Type != auth.Service || source.SourceCRN == "" {
		return errs.E(op, errs.Permission, "access_denied", "Only a service acting for one of its instances can delete what it delegated")
	}
	ctx = auth.WithPrincipal(ctx, source)
	for _, p := range s.policies.Load().byID {
		if p.Type == TypeAuthorization && p.State == StateActive && p.CreatedByID == "crn-"+source.SourceCRN {
			createdBySource := func(_ context.Context, p Policy) error {
				if p.CreatedByID != "crn-"+source.SourceCRN {
					return errs.E(op, errs.Permission, "access_denied", "The authorization was not created by this instance")
				}
				return nil
			}
			if _, err := s.changePolicy(ctx, source, op, p.ID, "", "iam-am.policy.delete", createdBySource, func(p *Policy) error {
				p.State = StateDeleted
				return nil
			}); err != nil {
				return err
			}
		}
	}
	return nil
}

// OnAuthorizationDeleted registers f to be called with every authorization
// that is deleted, after the deletion committed, on the deleting goroutine:
// the backup service uses it to re-create a dependent authorization that
// the user deleted while the delegation still stands. f must not block long.
func (s *Service) OnAuthorizationDeleted(f func(Policy)) {
	s.hookMu.Lock()
	defer s.hookMu.Unlock()
	s.authorizationDeleted = append(s.authorizationDeleted, f)
}

func (s *Service) authorizationWasDeleted(p Policy) {
	s.hookMu.Lock()
	hooks := slices.Clone(s.authorizationDeleted)
	s.hookMu.Unlock()
	for _, f := range hooks {
		f(p)
	}
}
