package console

import (
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/auth"
)

func authz(id, source, targetInstance, createdBy string, roles ...string) authorization {
	p := authorization{ID: id, Type: "authorization", CreatedByID: createdBy,
		Subjects:  []attributes{{Attributes: []attribute{{Name: "serviceName", Value: source}}}},
		Resources: []attributes{{Attributes: []attribute{{Name: "serviceName", Value: "kms"}, {Name: "serviceInstance", Value: targetInstance}}}}}
	for _, r := range roles {
		p.Roles = append(p.Roles, policyRole{RoleID: r})
	}
	return p
}

const depCRN = "crn:v1:bluemix:public:messagehub:us-south:a/acct:dep-1::"

func TestRemovalWarningFollowsTheSeedsRemovingKeys(t *testing.T) {
	delegator := authz("user", "messagehub", "kp-1", "IBMid-admin", auth.RoleReader, auth.RoleAuthorizationDelegator)
	dependent := authz("dep", "is", "kp-1", "crn-"+depCRN, auth.RoleReader)
	otherKP := authz("other", "messagehub", "kp-2", "IBMid-admin", auth.RoleReader, auth.RoleAuthorizationDelegator)
	plain := authz("plain", "messagehub", "kp-1", "IBMid-admin", auth.RoleReader)
	cases := []struct {
		name     string
		remove   authorization
		all      []authorization
		kind     string
		mentions string
	}{
		{"dependent while its delegator exists is re-created", dependent, []authorization{delegator, dependent}, "dependent", "re-created automatically"},
		{"delegator while the dependent exists breaks nothing now", delegator, []authorization{delegator, dependent}, "delegator", "Nothing breaks immediately"},
		{"dependent without a delegator stops backups for good", dependent, []authorization{dependent}, "both", "destroys the backups of all deployments"},
		{"a delegator of another KMS instance does not count", dependent, []authorization{otherKP, dependent}, "both", "cannot be re-created"},
		{"delegator with no dependent yet", delegator, []authorization{delegator}, "delegator", "No dependent authorization exists"},
		{"plain Reader authorization", plain, []authorization{plain}, "plain", "can no longer"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kind, warning := removalWarning(tc.remove, tc.all)
			if kind != tc.kind || !strings.Contains(warning, tc.mentions) {
				t.Errorf("got %s: %q; want %s mentioning %q", kind, warning, tc.kind, tc.mentions)
			}
		})
	}
}

func TestAuthorizationTypeColumn(t *testing.T) {
	cases := []struct {
		createdBy, want string
	}{
		{"IBMid-admin", "User defined"},
		{"crn-" + depCRN, "Created by " + depCRN},
		{"", "User defined"},
	}
	for _, tc := range cases {
		if got := authz("x", "is", "kp", tc.createdBy).Kind(); got != tc.want {
			t.Errorf("created_by_id %q: Type %q, want %q", tc.createdBy, got, tc.want)
		}
	}
	roles := authz("x", "messagehub", "kp", "", auth.RoleReader, auth.RoleAuthorizationDelegator).RoleNames()
	if roles != "AuthorizationDelegator, Reader" {
		t.Errorf("roles shown as %q", roles)
	}
}
