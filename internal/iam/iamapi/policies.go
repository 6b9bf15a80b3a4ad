package iamapi

import (
	"context"
	"net/http"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/iam"
)

const maxPolicyBody = 64 << 10

// withHref is a policy as the API shows it: with its URL.
func withHref(r *http.Request, p iam.Policy) iam.Policy {
	p.Href = baseURL(r) + "/v1/policies/" + p.ID
	return p
}

func writePolicy(w http.ResponseWriter, r *http.Request, status int, p iam.Policy) {
	w.Header().Set("ETag", p.ETag())
	httpapi.WriteJSON(w, status, withHref(r, p))
}

func (a *API) createPolicy(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	var req iam.PolicyRequest
	if err := httpapi.DecodeJSON(r, &req, maxPolicyBody, true); err != nil {
		return err
	}
	p, err := a.svc.CreatePolicy(ctx, req)
	if err != nil {
		return err
	}
	writePolicy(w, r, http.StatusCreated, p)
	return nil
}

type href struct {
	Href  string `json:"href"`
	Start string `json:"start,omitempty"`
}

type policyList struct {
	Limit    int          `json:"limit"`
	First    href         `json:"first"`
	Next     *href        `json:"next,omitempty"`
	Policies []iam.Policy `json:"policies"`
}

func (a *API) listPolicies(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit, err := queryInt(r, "limit", "invalid_parameter")
	if err != nil {
		return err
	}
	page, err := a.svc.ListPolicies(ctx, iam.PolicyFilter{AccountID: q.Get("account_id"), IAMID: q.Get("iam_id"),
		Type: q.Get("type"), ServiceName: q.Get("service_name"), SourceName: q.Get("source_service_name"),
		State: q.Get("state"), Sort: q.Get("sort"), Limit: limit, Start: q.Get("start")})
	if err != nil {
		return err
	}
	out := policyList{Limit: page.Limit, First: href{Href: pageURL(r, "start", "")}, Policies: make([]iam.Policy, len(page.Policies))}
	for i, p := range page.Policies {
		out.Policies[i] = withHref(r, p)
	}
	if page.Next != "" {
		out.Next = &href{Href: pageURL(r, "start", page.Next), Start: page.Next}
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

func (a *API) getPolicy(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	p, err := a.svc.GetPolicy(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	writePolicy(w, r, http.StatusOK, p)
	return nil
}

func ifMatch(r *http.Request) (string, error) {
	v := r.Header.Get("If-Match")
	if v == "" {
		return "", errs.E("iamapi", errs.Invalid, "missing_if_match", "The If-Match header is required: send the ETag of the policy you read").On("header", "If-Match")
	}
	return v, nil
}

func (a *API) updatePolicy(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	etag, err := ifMatch(r)
	if err != nil {
		return err
	}
	var req iam.PolicyRequest
	if err := httpapi.DecodeJSON(r, &req, maxPolicyBody, true); err != nil {
		return err
	}
	p, err := a.svc.UpdatePolicy(ctx, r.PathValue("id"), etag, req)
	if err != nil {
		return err
	}
	writePolicy(w, r, http.StatusOK, p)
	return nil
}

// patchPolicy restores a deleted policy: the only state change v1 allows.
func (a *API) patchPolicy(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	etag, err := ifMatch(r)
	if err != nil {
		return err
	}
	var req struct {
		State string `json:"state"`
	}
	if err := httpapi.DecodeJSON(r, &req, maxPolicyBody, true); err != nil {
		return err
	}
	if req.State != iam.StateActive {
		return errs.E("iamapi.patchPolicy", errs.Invalid, "invalid_body", `state must be "active": PATCH restores a deleted policy`).On("field", "state")
	}
	p, err := a.svc.RestorePolicy(ctx, r.PathValue("id"), etag)
	if err != nil {
		return err
	}
	writePolicy(w, r, http.StatusOK, p)
	return nil
}

func (a *API) deletePolicy(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := a.svc.DeletePolicy(ctx, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// roles is GET /v2/roles: the roles that can be granted on a service.
func (a *API) roles(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	if q.Get("service_name") == "" {
		return errs.E("iamapi.roles", errs.Invalid, "invalid_parameter", "service_name is a required query parameter").On("query_param", "service_name")
	}
	httpapi.WriteJSON(w, http.StatusOK, iam.Roles(q.Get("service_name"), q.Get("policy_type")))
	return nil
}
