package console

import (
	"cmp"
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/client"
)

// Access policies (Manage > Access (IAM) > Access policies) grant roles to
// a user or service ID on a service, one of its instances, or, for Event
// Streams, a cluster, topics, groups or transactional ids of a deployment.
// The page lists, creates and deletes them through IAM's /v1/policies; the
// API validates every policy (a cluster policy naming a resource is a 400).

// policyServices are the services the form grants access to.
var policyServices = []string{"messagehub", "kms"}

// accessPolicy is an access policy of IAM's v1 API: the shape of an
// authorization, with an iam_id subject.
type accessPolicy authorization

func (p accessPolicy) IAMID() string        { return authorization(p).subject("iam_id") }
func (p accessPolicy) Service() string      { return authorization(p).resource("serviceName") }
func (p accessPolicy) Instance() string     { return authorization(p).resource("serviceInstance") }
func (p accessPolicy) ResourceType() string { return authorization(p).resource("resourceType") }
func (p accessPolicy) Resource() string     { return authorization(p).resource("resource") }
func (p accessPolicy) RoleNames() string    { return authorization(p).RoleNames() }

// target is the resource the policy grants on, as IAM checks who may change it.
func (p accessPolicy) target(account string) auth.Resource {
	return auth.Resource{AccountID: account, ServiceName: p.Service(), ServiceInstance: p.Instance(),
		ResourceType: p.ResourceType(), ResourceID: p.Resource()}
}

// subject is a user or service ID a policy can be granted to.
type subject struct {
	IAMID, Name, Kind string // Kind: "User" or "Service ID"
}

// Label is how the subject select and the list name a subject.
func (s subject) Label() string {
	if s.Name == "" {
		return s.IAMID
	}
	return s.Name + " (" + s.Kind + ")"
}

// listSubjects lists the account's users and service IDs. One the caller
// may not list is left out: the policies then name it by its IAM id.
func listSubjects(ctx context.Context, api *caller, account string) []subject {
	var out []subject
	var users struct {
		Resources []struct {
			IAMID  string `json:"iam_id"`
			Email  string `json:"email"`
			UserID string `json:"user_id"`
		} `json:"resources"`
	}
	if api.get(ctx, "/v2/accounts/"+url.PathEscape(account)+"/users", &users) == nil {
		for _, u := range users.Resources {
			out = append(out, subject{IAMID: u.IAMID, Name: cmp.Or(u.Email, u.UserID), Kind: "User"})
		}
	}
	var sids struct {
		ServiceIDs []struct {
			IAMID string `json:"iam_id"`
			Name  string `json:"name"`
		} `json:"serviceids"`
	}
	if api.get(ctx, "/v1/serviceids?"+url.Values{"account_id": {account}}.Encode(), &sids) == nil {
		for _, s := range sids.ServiceIDs {
			out = append(out, subject{IAMID: s.IAMID, Name: s.Name, Kind: "Service ID"})
		}
	}
	return out
}

func (c *Console) accessPolicies(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	v := view{Title: "Access policies", Nav: "access-policies"}
	list, err := listPolicies(r, s, api, "access")
	if err != nil {
		v.Err = apiError(err)
	}
	policies := make([]accessPolicy, len(list))
	canDelete := map[string]bool{}
	for i, p := range list {
		policies[i] = accessPolicy(p)
		canDelete[p.ID] = c.can(r.Context(), s, auth.PolicyWrite, policies[i].target(s.principal.AccountID))
	}
	subjects := map[string]subject{}
	for _, sub := range listSubjects(r.Context(), api, s.principal.AccountID) {
		subjects[sub.IAMID] = sub
	}
	names := map[string]string{}
	for crn, in := range instanceNames(r.Context(), api) {
		names[crn], names[in.GUID] = in.Name, in.Name
	}
	data := map[string]any{"Policies": policies, "Subjects": subjects, "Names": names,
		"CanCreate": c.canManagePolicies(r.Context(), s), "CanDelete": canDelete}
	if id := r.URL.Query().Get("remove"); id != "" {
		for _, p := range policies {
			if p.ID == id && canDelete[id] {
				data["Remove"] = p
			}
		}
	}
	v.Data = data
	c.render(w, r, s, http.StatusOK, "access_policies", v)
}

// canManagePolicies says whether the user may create access policies on
// any of the services the form offers.
func (c *Console) canManagePolicies(ctx context.Context, s *session) bool {
	return slices.ContainsFunc(policyServices, func(svc string) bool {
		return c.can(ctx, s, auth.PolicyWrite, auth.Resource{ServiceName: svc})
	})
}

// policyInput is the create form.
type policyInput struct {
	Subject, Service, Instance, ResourceType, Resource string
	Roles                                              []string
}

func (in policyInput) HasRole(crn string) bool { return slices.Contains(in.Roles, crn) }

func (c *Console) accessPolicyForm(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	q := r.URL.Query()
	c.renderAccessPolicyForm(w, r, s, api, http.StatusOK, policyInput{Subject: q.Get("subject"), Service: q.Get("service")}, nil)
}

// formRole is a role the form offers, with the services it applies to.
type formRole struct {
	CRN, Name, Description string
	Services               []string
}

// grantableRoles asks IAM's role catalogue which roles each service has.
func grantableRoles(ctx context.Context, api *caller) ([]formRole, error) {
	var out []formRole
	index := map[string]int{}
	for _, svc := range policyServices {
		var cat struct {
			ServiceRoles []struct {
				CRN         string `json:"crn"`
				DisplayName string `json:"display_name"`
				Description string `json:"description"`
			} `json:"service_roles"`
			SystemRoles []struct {
				CRN         string `json:"crn"`
				DisplayName string `json:"display_name"`
				Description string `json:"description"`
			} `json:"system_roles"`
		}
		if err := api.get(ctx, "/v2/roles?"+url.Values{"service_name": {svc}}.Encode(), &cat); err != nil {
			return nil, err
		}
		for _, role := range append(cat.SystemRoles, cat.ServiceRoles...) {
			i, ok := index[role.CRN]
			if !ok {
				i = len(out)
				index[role.CRN] = i
				out = append(out, formRole{CRN: role.CRN, Name: role.DisplayName, Description: role.Description})
			}
			out[i].Services = append(out[i].Services, svc)
		}
	}
	return out, nil
}

func (c *Console) renderAccessPolicyForm(w http.ResponseWriter, r *http.Request, s *session, api *caller, status int, in policyInput, failed error) {
	if in.Service == "" {
		in.Service = "messagehub"
	}
	v := view{Title: "Create access policy", Nav: "access-policies"}
	if failed != nil {
		v.Err = apiError(failed)
	}
	roles, err := grantableRoles(r.Context(), api)
	if err != nil && v.Err == nil {
		v.Err = apiError(err)
	}
	byService, err := instancesByService(r.Context(), api)
	if err != nil && v.Err == nil {
		v.Err = apiError(err)
	}
	v.Data = map[string]any{"Form": in, "Subjects": listSubjects(r.Context(), api, s.principal.AccountID),
		"Roles": roles, "Services": policyServices, "Instances": byService, "ResourceTypes": auth.StreamsResourceTypes}
	c.render(w, r, s, status, "access_policy_form", v)
}

// createAccessPolicy posts the access policy the form describes.
func (c *Console) createAccessPolicy(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	f := r.PostForm
	in := policyInput{Subject: f.Get("subject"), Service: f.Get("service"), Instance: f.Get("instance"),
		ResourceType: f.Get("resource_type"), Resource: strings.TrimSpace(f.Get("resource")), Roles: f["role"]}
	refuse := func(msg string) {
		c.renderAccessPolicyForm(w, r, s, api, http.StatusBadRequest, in, &client.Error{Status: http.StatusBadRequest, Message: msg})
	}
	// The form's own fields are checked here only where sending them as
	// they are would grant something else than the form showed.
	if in.Instance != "" {
		all, _ := listInstances(r.Context(), api, nil)
		if !slices.ContainsFunc(all, func(i instance) bool { return i.GUID == in.Instance && i.Service() == in.Service }) {
			refuse("The instance chosen is not an instance of " + serviceDisplayName(in.Service) + ": choose one of that service, or all instances.")
			return
		}
	}
	if in.Service != "messagehub" && (in.ResourceType != "" || in.Resource != "") {
		refuse("Resource types and resources scope Event Streams policies only: clear them for " + serviceDisplayName(in.Service) + ".")
		return
	}
	account := s.principal.AccountID
	resource := []attribute{{Name: "accountId", Value: account, Operator: "stringEquals"}, {Name: "serviceName", Value: in.Service, Operator: "stringEquals"}}
	if in.Instance != "" {
		resource = append(resource, attribute{Name: "serviceInstance", Value: in.Instance, Operator: "stringEquals"})
	}
	if in.ResourceType != "" {
		resource = append(resource, attribute{Name: "resourceType", Value: in.ResourceType, Operator: "stringEquals"})
	}
	if in.Resource != "" {
		// The API picks the operator: stringMatch for a value ending in *.
		resource = append(resource, attribute{Name: "resource", Value: in.Resource})
	}
	roles := []policyRole{}
	for _, crn := range in.Roles {
		roles = append(roles, policyRole{RoleID: crn})
	}
	body := map[string]any{"type": "access",
		"subjects":  []attributes{{Attributes: []attribute{{Name: "iam_id", Value: in.Subject}}}},
		"roles":     roles,
		"resources": []attributes{{Attributes: resource}}}
	if err := api.do(r.Context(), http.MethodPost, "/v1/policies", nil, body, nil); err != nil {
		c.renderAccessPolicyForm(w, r, s, api, apiError(err).Status, in, err)
		return
	}
	c.redirect(w, r, s, "/console/iam/policies", "Access policy created.")
}

func (c *Console) deleteAccessPolicy(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	if err := api.do(r.Context(), http.MethodDelete, "/v1/policies/"+url.PathEscape(r.PathValue("id")), nil, nil, nil); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, "/console/iam/policies", "Access policy removed.")
}
