package iamapi

import (
	"context"
	"net/http"
	"net/url"
	"strings"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/iam"
)

const maxIdentityBody = 64 << 10

// createdAPIKey is the only response that carries an API key's value.
type createdAPIKey struct {
	iam.APIKey
	Value string `json:"apikey"`
}

func (a *API) createAPIKey(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	var req iam.APIKeyRequest
	if err := httpapi.DecodeJSON(r, &req, maxIdentityBody, true); err != nil {
		return err
	}
	key, value, err := a.svc.CreateAPIKey(ctx, req)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	httpapi.WriteJSON(w, http.StatusCreated, createdAPIKey{APIKey: key, Value: value})
	return nil
}

type apiKeyList struct {
	Offset  int          `json:"offset"`
	Limit   int          `json:"limit"`
	First   string       `json:"first"`
	Next    string       `json:"next,omitempty"`
	APIKeys []iam.APIKey `json:"apikeys"`
}

func (a *API) listAPIKeys(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	size, err := queryInt(r, "pagesize", "BXNIM0109E")
	if err != nil {
		return err
	}
	page, err := a.svc.ListAPIKeys(ctx, iam.APIKeyFilter{AccountID: q.Get("account_id"), IAMID: q.Get("iam_id"),
		Scope: q.Get("scope"), Type: q.Get("type"), PageSize: size, PageToken: q.Get("pagetoken")})
	if err != nil {
		return err
	}
	out := apiKeyList{Offset: page.Offset, Limit: page.Limit, APIKeys: page.APIKeys, First: pageURL(r, "pagetoken", "")}
	if page.Next != "" {
		out.Next = pageURL(r, "pagetoken", page.Next)
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// pageURL is the request's URL with its page token set to token.
func pageURL(r *http.Request, param, token string) string {
	q := r.URL.Query()
	q.Del(param)
	if token != "" {
		q.Set(param, token)
	}
	u := url.URL{Path: r.URL.Path, RawQuery: q.Encode()}
	return baseURL(r) + u.String()
}

func (a *API) apiKeyDetails(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	value := r.Header.Get("IAM-ApiKey")
	if value == "" {
		return errs.E("iamapi.apiKeyDetails", errs.Invalid, "BXNIM0109E", "The IAM-ApiKey header is missing").On("header", "IAM-ApiKey")
	}
	key, err := a.svc.APIKeyDetails(ctx, value)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, key)
	return nil
}

func (a *API) getAPIKey(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	key, err := a.svc.GetAPIKey(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", key.EntityTag)
	httpapi.WriteJSON(w, http.StatusOK, key)
	return nil
}

func (a *API) deleteAPIKey(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := a.svc.DeleteAPIKey(ctx, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *API) createServiceID(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	var req iam.ServiceIDRequest
	if err := httpapi.DecodeJSON(r, &req, maxIdentityBody, true); err != nil {
		return err
	}
	sid, err := a.svc.CreateServiceID(ctx, req)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusCreated, sid)
	return nil
}

func (a *API) listServiceIDs(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	ids, err := a.svc.ListServiceIDs(ctx, q.Get("account_id"), q.Get("name"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"offset": 0, "limit": len(ids), "serviceids": ids})
	return nil
}

func (a *API) getServiceID(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	sid, err := a.svc.GetServiceID(ctx, r.PathValue("id"))
	if err != nil {
		return err
	}
	w.Header().Set("ETag", sid.EntityTag)
	httpapi.WriteJSON(w, http.StatusOK, sid)
	return nil
}

func (a *API) updateServiceID(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	var req iam.ServiceIDRequest
	if err := httpapi.DecodeJSON(r, &req, maxIdentityBody, true); err != nil {
		return err
	}
	ifMatch := r.Header.Get("If-Match")
	if ifMatch == "" {
		return errs.E("iamapi.updateServiceID", errs.Invalid, "BXNIM0109E", "The If-Match header is required: send the entity_tag you read, or *").On("header", "If-Match")
	}
	sid, err := a.svc.UpdateServiceID(ctx, r.PathValue("id"), strings.Trim(ifMatch, `"`), req)
	if err != nil {
		return err
	}
	w.Header().Set("ETag", sid.EntityTag)
	httpapi.WriteJSON(w, http.StatusOK, sid)
	return nil
}

func (a *API) deleteServiceID(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := a.svc.DeleteServiceID(ctx, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// inviteRequest is user management's invitation body.
type inviteRequest struct {
	Users []struct {
		Email       string `json:"email"`
		AccountRole string `json:"account_role,omitempty"`
	} `json:"users"`
}

func (a *API) inviteUsers(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	var req inviteRequest
	if err := httpapi.DecodeJSON(r, &req, maxIdentityBody, true); err != nil {
		return err
	}
	if len(req.Users) == 0 || len(req.Users) > 100 {
		return errs.E("iamapi.inviteUsers", errs.Invalid, "BXNIM0109E", "users must list 1 to 100 users to invite").On("field", "users")
	}
	users := make([]iam.User, 0, len(req.Users))
	for _, u := range req.Users {
		user, err := a.svc.InviteUser(ctx, r.PathValue("account_id"), u.Email)
		if err != nil {
			return err
		}
		users = append(users, user)
	}
	httpapi.WriteJSON(w, http.StatusAccepted, map[string]any{"resources": users})
	return nil
}

func (a *API) listUsers(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	users, err := a.svc.ListUsers(ctx, r.PathValue("account_id"))
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"total_results": len(users), "limit": len(users), "resources": users})
	return nil
}

func (a *API) removeUser(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	if err := a.svc.RemoveUser(ctx, r.PathValue("account_id"), r.PathValue("iam_id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
