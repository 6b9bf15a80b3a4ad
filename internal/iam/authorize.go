package iam

import (
	"context"
	"strings"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
)

// Authorize allows an action when an active policy grants the principal a
// role that includes it on a resource covering r, and denies it otherwise.
// Users and service IDs are granted by access policies; a Keyline service
// acting for an instance by authorizations. It reads the in-memory policy
// index, which every policy change updates before its call returns.
func (s *Service) Authorize(ctx context.Context, p *auth.Principal, action string, r auth.Resource) error {
	const op = "iam.Authorize"
	if p == nil {
		return errs.E(op, errs.Unauthenticated, "BXNIM0308E", "No authorization header found")
	}
	idx, err := s.policyIndexFor(ctx)
	if err != nil {
		return err
	}
	switch p.Type {
	case auth.User, auth.ServiceID:
		for _, pol := range idx.bySubject["iam:"+p.IAMID] {
			if pol.Type == TypeAccess && pol.resourceCovers(r) && rolesAllow(pol, action, func(role string) []string { return accessActions(r.ServiceName, role) }) {
				return nil
			}
		}
		return errs.Ef(op, errs.Permission, "access_denied",
			"%s is not authorized to perform %s on %s: no active access policy grants it a role that includes this action",
			describePrincipal(p), action, describeResource(r))
	case auth.Service:
		for _, pol := range idx.bySubject["svc:"+p.ServiceName] {
			if pol.Type == TypeAuthorization && pol.subjectCovers(p) && pol.resourceCovers(r) &&
				rolesAllow(pol, action, func(role string) []string { return auth.AuthorizationActions(r.ServiceName, role) }) {
				return nil
			}
		}
		return errs.Ef(op, errs.Permission, "access_denied",
			"%s is not authorized to perform %s on %s: no active service-to-service authorization from %s to %s grants the Reader role",
			describePrincipal(p), action, describeResource(r), p.ServiceName, orAll(r.ServiceName))
	}
	return errs.Ef(op, errs.Permission, "access_denied", "%s is not authorized to perform %s", describePrincipal(p), action)
}

func rolesAllow(p *Policy, action string, actions func(role string) []string) bool {
	for _, role := range p.Roles {
		if auth.Allows(actions(role.RoleID), action) {
			return true
		}
	}
	return false
}

// accessActions extends auth.AccessActions with IAM's own services.
func accessActions(service, role string) []string {
	switch service {
	case ServiceIdentity:
		viewer := []string{ActionAPIKeyGet, ActionAPIKeyList, ActionServiceIDGet}
		operator := append(append([]string(nil), viewer...), ActionAPIKeyCreate, ActionAPIKeyDelete)
		editor := append(append([]string(nil), operator...), ActionServiceIDCreate, ActionServiceIDUpdate, ActionServiceIDDelete)
		switch role {
		case auth.RoleViewer:
			return viewer
		case auth.RoleOperator:
			return operator
		case auth.RoleEditor:
			return editor
		case auth.RoleAdministrator:
			return append(editor, auth.PolicyRead, auth.PolicyWrite)
		}
		return nil
	case ServiceUserManagement:
		switch role {
		case auth.RoleViewer, auth.RoleOperator:
			return []string{ActionUserRead}
		case auth.RoleEditor:
			return []string{ActionUserRead, ActionUserInvite}
		case auth.RoleAdministrator:
			return []string{ActionUserRead, ActionUserInvite, ActionUserRemove, auth.PolicyRead, auth.PolicyWrite}
		}
		return nil
	}
	return auth.AccessActions(service, role)
}

func describePrincipal(p *auth.Principal) string {
	if p.Type == auth.Service {
		if p.SourceInstance != "" {
			return p.ServiceName + " instance " + p.SourceInstance
		}
		return "the service " + p.ServiceName
	}
	if p.Name != "" {
		return p.Name + " (" + p.IAMID + ")"
	}
	return p.IAMID
}

func describeResource(r auth.Resource) string {
	var b strings.Builder
	b.WriteString(orAll(r.ServiceName))
	if r.ServiceInstance != "" {
		b.WriteString(" instance " + r.ServiceInstance)
	}
	if r.ResourceType != "" {
		b.WriteString(" " + r.ResourceType)
		if r.ResourceID != "" {
			b.WriteString(" " + r.ResourceID)
		}
	}
	b.WriteString(" in account " + r.AccountID)
	return b.String()
}

func orAll(service string) string {
	if service == "" {
		return "all services"
	}
	return service
}
