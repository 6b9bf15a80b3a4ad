package iam

import "github.com/keyline/keyline/internal/auth"

// Role is a role of the catalogue (GET /v2/roles).
type Role struct {
	DisplayName string   `json:"display_name"`
	Description string   `json:"description"`
	Actions     []string `json:"actions"`
	CRN         string   `json:"crn"`
}

// RoleCatalogue lists the roles that can be granted on a service.
type RoleCatalogue struct {
	ServiceRoles []Role `json:"service_roles"`
	SystemRoles  []Role `json:"system_roles"`
	CustomRoles  []Role `json:"custom_roles"`
}

var serviceRoleCRNs = []string{auth.RoleReader, auth.RoleReaderPlus, auth.RoleWriter, auth.RoleManager, auth.RoleKeyPurge}
var systemRoleCRNs = []string{auth.RoleViewer, auth.RoleOperator, auth.RoleEditor, auth.RoleAdministrator}

// Roles is the role catalogue of service for access policies, or, with
// policyType "authorization", what a source service can be granted on it.
func Roles(service, policyType string) RoleCatalogue {
	cat := RoleCatalogue{ServiceRoles: []Role{}, SystemRoles: []Role{}, CustomRoles: []Role{}}
	role := func(crn string, actions []string) Role {
		return Role{DisplayName: auth.RoleDisplayName(crn), Description: roleDescriptions[crn], Actions: actions, CRN: crn}
	}
	if policyType == TypeAuthorization {
		if actions := auth.AuthorizationActions(service, auth.RoleReader); len(actions) > 0 {
			cat.ServiceRoles = append(cat.ServiceRoles, role(auth.RoleReader, actions))
			cat.SystemRoles = append(cat.SystemRoles, role(auth.RoleAuthorizationDelegator, []string{}))
		}
		return cat
	}
	for _, crn := range serviceRoleCRNs {
		if actions := accessActions(service, crn); len(actions) > 0 {
			cat.ServiceRoles = append(cat.ServiceRoles, role(crn, actions))
		}
	}
	for _, crn := range systemRoleCRNs {
		cat.SystemRoles = append(cat.SystemRoles, role(crn, append([]string{}, accessActions(service, crn)...)))
	}
	return cat
}
