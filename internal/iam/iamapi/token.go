package iamapi

import (
	"io"
	"mime"
	"net/http"
	"net/url"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/iam"
)

// maxTokenForm bounds the token endpoint's body: an API key and a refresh
// token fit in a few KiB.
const maxTokenForm = 32 << 10

// token is POST /identity/token and /oidc/token: the API key exchange.
func (a *API) token(w http.ResponseWriter, r *http.Request) {
	req, err := readTokenForm(r)
	if err == nil {
		var tok iam.Token
		if tok, err = a.svc.Token(r.Context(), req); err == nil {
			w.Header().Set("Cache-Control", "no-store")
			httpapi.WriteJSON(w, http.StatusOK, tok)
			return
		}
	}
	a.writeIdentityError(w, r, err)
}

func readTokenForm(r *http.Request) (iam.TokenRequest, error) {
	const op = "iamapi.token"
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/x-www-form-urlencoded" {
			return iam.TokenRequest{}, errs.E(op, errs.Invalid, "BXNIM0109E", "The request body must be application/x-www-form-urlencoded").On("header", "Content-Type")
		}
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxTokenForm+1))
	if err != nil {
		return iam.TokenRequest{}, errs.E(op, errs.Invalid, "BXNIM0109E", "The request body could not be read")
	}
	if len(body) > maxTokenForm {
		return iam.TokenRequest{}, errs.Ef(op, errs.TooLarge, "BXNIM0109E", "The request body is larger than %d bytes", maxTokenForm)
	}
	return DecodeTokenForm(body)
}

// DecodeTokenForm reads the token endpoint's form. A parameter given twice
// is refused rather than guessed at.
func DecodeTokenForm(body []byte) (iam.TokenRequest, error) {
	const op = "iamapi.DecodeTokenForm"
	v, err := url.ParseQuery(string(body))
	if err != nil {
		return iam.TokenRequest{}, errs.E(op, errs.Invalid, "BXNIM0109E", "The request body is not a valid form")
	}
	get := func(name string) (string, error) {
		switch vs := v[name]; len(vs) {
		case 0:
			return "", nil
		case 1:
			return vs[0], nil
		}
		return "", errs.Ef(op, errs.Invalid, "BXNIM0109E", "The form parameter %s is given more than once", name).On("field", name)
	}
	var req iam.TokenRequest
	if req.GrantType, err = get("grant_type"); err != nil {
		return iam.TokenRequest{}, err
	}
	if req.APIKey, err = get("apikey"); err != nil {
		return iam.TokenRequest{}, err
	}
	if req.RefreshToken, err = get("refresh_token"); err != nil {
		return iam.TokenRequest{}, err
	}
	return req, nil
}

// keys is GET /identity/keys: the JWKS that verifies IAM's tokens.
func (a *API) keys(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string][]iam.JWK{"keys": a.svc.JWKS()})
}
