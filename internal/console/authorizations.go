package console

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/auth"
)

// attribute is an IAM v1 policy attribute.
type attribute struct {
	Name     string `json:"name"`
	Value    string `json:"value"`
	Operator string `json:"operator,omitempty"`
}

type attributes struct {
	Attributes []attribute `json:"attributes"`
}

func (a attributes) get(name string) string {
	for _, at := range a.Attributes {
		if at.Name == name {
			return at.Value
		}
	}
	return ""
}

type policyRole struct {
	RoleID      string `json:"role_id"`
	DisplayName string `json:"display_name,omitempty"`
}

// authorization is a service-to-service policy of IAM's v1 API.
type authorization struct {
	ID          string       `json:"id"`
	Type        string       `json:"type"`
	Description string       `json:"description,omitempty"`
	Subjects    []attributes `json:"subjects"`
	Roles       []policyRole `json:"roles"`
	Resources   []attributes `json:"resources"`
	CreatedAt   *time.Time   `json:"created_at"`
	CreatedByID string       `json:"created_by_id"`
	State       string       `json:"state"`
}

func (p authorization) subject(name string) string {
	if len(p.Subjects) == 0 {
		return ""
	}
	return p.Subjects[0].get(name)
}

func (p authorization) resource(name string) string {
	if len(p.Resources) == 0 {
		return ""
	}
	return p.Resources[0].get(name)
}

func (p authorization) SourceService() string  { return p.subject("serviceName") }
func (p authorization) SourceInstance() string { return p.subject("serviceInstance") }
func (p authorization) TargetService() string  { return p.resource("serviceName") }
func (p authorization) TargetInstance() string { return p.resource("serviceInstance") }
func (p authorization) TargetKey() string      { return p.resource("resource") }

// RoleNames lists the roles as the console shows them, delegation first as
// IAM's own console does ("AuthorizationDelegator, Reader").
func (p authorization) RoleNames() string {
	var names []string
	for _, r := range p.Roles {
		names = append(names, auth.RoleName(r.RoleID))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// Delegator says whether the authorization lets the source create
// authorizations for its dependent services.
func (p authorization) Delegator() bool {
	return slices.ContainsFunc(p.Roles, func(r policyRole) bool { return r.RoleID == auth.RoleAuthorizationDelegator })
}

// CreatorCRN is the instance that created a dependent authorization, from
// IAM's "crn-<CRN>" form of created_by_id; "" for a user-defined one.
func (p authorization) CreatorCRN() string {
	c, ok := strings.CutPrefix(p.CreatedByID, "crn-")
	if !ok {
		return ""
	}
	return c
}

// Kind is the Type column: "User defined" or "Created by <CRN>".
func (p authorization) Kind() string {
	if c := p.CreatorCRN(); c != "" {
		return "Created by " + c
	}
	return "User defined"
}

// delegates says whether delegator d is the authorization a dependent one
// was created under: the same target instance (or all) and, as source, the
// service of the instance that created it.
func (d authorization) delegates(dep authorization) bool {
	if !d.Delegator() || d.TargetService() != dep.TargetService() {
		return false
	}
	if d.TargetInstance() != "" && d.TargetInstance() != dep.TargetInstance() {
		return false
	}
	return d.SourceService() == "" || d.SourceService() == crnService(dep.CreatorCRN())
}

// Removal consequences, in the words of the seed's "Removing keys".
const (
	removeDependent = "This authorization was created by the deployment so that the block storage holding its backups can use the key. If you remove it, it is re-created automatically while the delegator authorization exists. Until then, backups of this deployment and of every other deployment that uses the same key may fail. There should be no lasting effect except for missing backups."
	removeDelegator = "Nothing breaks immediately, because the dependent block storage authorization is still in place. But if that authorization is ever removed, it can no longer be re-created, and every deployment that uses the same key can lose the ability to back up."
	removeBoth      = "Its counterpart is already gone. Removing this one means every deployment that uses the same key immediately loses the ability to back up, and the authorizations cannot be re-created: this effectively destroys the backups of all deployments that use the key."
	removePlain     = "Instances of the source service will no longer be able to use keys of the target. Deployments that depend on it can no longer unwrap their data encryption keys after a restart, and new deployments with these keys fail to provision."
)

// removalWarning tells what removing p does, given the account's other authorizations.
func removalWarning(p authorization, all []authorization) (kind, warning string) {
	switch {
	case p.CreatorCRN() != "":
		for _, d := range all {
			if d.ID != p.ID && d.delegates(p) {
				return "dependent", removeDependent
			}
		}
		return "both", removeBoth
	case p.Delegator():
		for _, dep := range all {
			if dep.ID != p.ID && dep.CreatorCRN() != "" && p.delegates(dep) {
				return "delegator", removeDelegator
			}
		}
		return "delegator", removeDelegator + " No dependent authorization exists under it yet, so removing it now only stops new deployments from creating one."
	}
	return "plain", removePlain
}

type policyList struct {
	Policies []authorization `json:"policies"`
	Next     *struct {
		Href  string `json:"href"`
		Start string `json:"start"`
	} `json:"next"`
}

func (c *Console) listAuthorizations(r *http.Request, s *session, api *caller) ([]authorization, error) {
	return listPolicies(r, s, api, "authorization")
}

// listPolicies lists the account's policies of type typ, every page.
func listPolicies(r *http.Request, s *session, api *caller, typ string) ([]authorization, error) {
	q := url.Values{"type": {typ}, "account_id": {s.principal.AccountID}}
	var all []authorization
	for pages := 0; pages < 50; pages++ {
		var page policyList
		if err := api.get(r.Context(), "/v1/policies?"+q.Encode(), &page); err != nil {
			return nil, err
		}
		all = append(all, page.Policies...)
		if page.Next == nil || page.Next.Start == "" {
			break
		}
		q.Set("start", page.Next.Start)
	}
	return all, nil
}

func (c *Console) authorizations(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	v := view{Title: "Authorizations", Nav: "authorizations"}
	all, err := c.listAuthorizations(r, s, api)
	if err != nil {
		v.Err = apiError(err)
	}
	// Instances by GUID and by CRN, to name the ones authorizations refer to.
	names := map[string]string{}
	for crn, in := range instanceNames(r.Context(), api) {
		names[crn], names[in.GUID] = in.Name, in.Name
	}
	data := map[string]any{
		"Names":          names,
		"Authorizations": all,
		"CanManage":      c.can(r.Context(), s, auth.PolicyWrite, auth.Resource{ServiceName: "kms"}),
	}
	if id := r.URL.Query().Get("remove"); id != "" {
		for _, p := range all {
			if p.ID == id {
				kind, warning := removalWarning(p, all)
				data["Remove"] = map[string]any{"Policy": p, "Kind": kind, "Warning": warning}
			}
		}
	}
	v.Data = data
	c.render(w, r, s, http.StatusOK, "authorizations", v)
}

// authorizationForm is the seed's "Create" form; query parameters preselect
// values, e.g. from a failed provisioning.
func (c *Console) authorizationForm(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	q := r.URL.Query()
	form := authorizationInput{SourceService: q.Get("source"), SourceInstance: q.Get("source_instance"),
		TargetService: q.Get("target"), TargetInstance: q.Get("target_instance"), Reader: true, Delegate: q.Get("delegate") != "false",
		Return: returnTo(q.Get("return"))}
	c.renderAuthorizationForm(w, r, s, api, http.StatusOK, form, nil)
}

// authorizationInput is the create form.
type authorizationInput struct {
	SourceService, SourceInstance string
	TargetService, TargetInstance string
	Reader, Delegate              bool
	// Return is the console page to go back to once the authorization
	// exists (the provisioning form that asked for it), or "".
	Return string
}

// returnTo keeps a return address on this console; anything else is dropped.
func returnTo(path string) string {
	if path == "" || safeNext(path) != path {
		return ""
	}
	return path
}

func (c *Console) renderAuthorizationForm(w http.ResponseWriter, r *http.Request, s *session, api *caller, status int, in authorizationInput, failed error) {
	if in.SourceService == "" {
		in.SourceService = "messagehub"
	}
	if in.TargetService == "" {
		in.TargetService = "kms"
	}
	v := view{Title: "Create authorization", Nav: "authorizations"}
	if failed != nil {
		v.Err = apiError(failed)
	}
	byService, err := instancesByService(r.Context(), api)
	if err != nil && v.Err == nil {
		v.Err = apiError(err)
	}
	v.Data = map[string]any{"Form": in, "Instances": byService,
		"SourceServices": []string{"messagehub"}, "TargetServices": []string{"kms"}}
	c.render(w, r, s, status, "authorization_form", v)
}

// instancesByService lists the account's instances by service name.
func instancesByService(ctx context.Context, api *caller) (map[string][]instance, error) {
	all, err := listInstances(ctx, api, nil)
	byService := map[string][]instance{}
	for _, i := range all {
		byService[i.Service()] = append(byService[i.Service()], i)
	}
	return byService, err
}

// createAuthorization posts the policy the form describes: Reader, plus
// AuthorizationDelegator when delegation is enabled.
func (c *Console) createAuthorization(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	f := r.PostForm
	in := authorizationInput{SourceService: f.Get("source_service"), TargetService: f.Get("target_service"),
		TargetInstance: f.Get("target_instance"), Reader: f.Get("role_reader") != "", Delegate: f.Get("delegate") != "",
		Return: returnTo(f.Get("return"))}
	oneInstance := f.Get("source_scope") == "instance"
	if oneInstance {
		in.SourceInstance = f.Get("source_instance")
	}
	account := s.principal.AccountID
	subject := []attribute{{Name: "accountId", Value: account}, {Name: "serviceName", Value: in.SourceService}}
	// One instance chosen but none picked is sent as such, for the API to
	// refuse, never silently widened to all instances.
	if oneInstance {
		subject = append(subject, attribute{Name: "serviceInstance", Value: in.SourceInstance})
	}
	resource := []attribute{{Name: "accountId", Value: account, Operator: "stringEquals"}, {Name: "serviceName", Value: in.TargetService, Operator: "stringEquals"}}
	if in.TargetInstance != "" {
		resource = append(resource, attribute{Name: "serviceInstance", Value: in.TargetInstance, Operator: "stringEquals"})
	}
	var roles []policyRole
	if in.Reader {
		roles = append(roles, policyRole{RoleID: auth.RoleReader})
	}
	if in.Delegate {
		roles = append(roles, policyRole{RoleID: auth.RoleAuthorizationDelegator})
	}
	body := map[string]any{"type": "authorization", "subjects": []attributes{{Attributes: subject}},
		"roles": roles, "resources": []attributes{{Attributes: resource}}}
	var created authorization
	if err := api.do(r.Context(), http.MethodPost, "/v1/policies", nil, body, &created); err != nil {
		c.renderAuthorizationForm(w, r, s, api, apiError(err).Status, in, err)
		return
	}
	msg := "Authorization created: " + serviceDisplayName(in.SourceService) + " may now use " + serviceDisplayName(in.TargetService) + " keys."
	if in.Return != "" {
		c.redirect(w, r, s, in.Return, msg+" Continue where you left off.")
		return
	}
	c.redirect(w, r, s, "/console/iam/authorizations", msg)
}

func (c *Console) deleteAuthorization(w http.ResponseWriter, r *http.Request, s *session, api *caller) {
	id := r.PathValue("id")
	if err := api.do(r.Context(), http.MethodDelete, "/v1/policies/"+url.PathEscape(id), nil, nil, nil); err != nil {
		c.renderAPIError(w, r, s, err)
		return
	}
	c.redirect(w, r, s, "/console/iam/authorizations", "Authorization removed.")
}
