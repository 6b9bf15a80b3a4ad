package kpapi_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	kp "github.com/IBM/keyprotect-go-client"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/iam/iamtest"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/kms/kpapi"
)

// TestWithKeylineIAM runs the official client against the KMS with
// Keyline's IAM verifying signed tokens and evaluating real policies.
func TestWithKeylineIAM(t *testing.T) {
	ie := iamtest.New(t)
	ctx := context.Background()
	svc, err := kms.New(ctx, kms.Config{DB: ie.DB, Master: ie.Master, Clock: ie.Clock, Authorizer: ie.Service, Audit: kms.ActivityTracker(ie.Audit)})
	ok(t, err)
	ok(t, svc.CreateInstance(ctx, kms.Instance{GUID: instance, AccountID: ie.Account.ID}))
	mux := http.NewServeMux()
	kpapi.New(svc, ie.Service, nil).Register(mux)
	srv := httptest.NewServer(httpapi.Middleware(nil, mux))
	t.Cleanup(srv.Close)

	tokenFor := func(apikey string) string {
		tok, err := ie.Service.Token(ctx, iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: apikey})
		ok(t, err)
		return tok.AccessToken
	}
	client := func(token string) *kp.Client {
		c, err := kp.New(kp.ClientConfig{BaseURL: srv.URL, Authorization: "Bearer " + token, InstanceID: instance}, kp.DefaultTransport())
		ok(t, err)
		return c
	}
	target := auth.Resource{AccountID: ie.Account.ID, ServiceName: "kms", ServiceInstance: instance}
	alice, aliceKey := ie.NewUser(t, "alice@example.com")
	ie.Grant(t, alice.IAMID, target, auth.RoleManager)
	_, bobKey := ie.NewUser(t, "bob@example.com")

	c := client(tokenFor(aliceKey))
	key := must[*kp.Key](t)(c.CreateRootKey(ctx, "iam-protected", nil))
	if keys := must[*kp.Keys](t)(c.GetKeys(ctx, 0, 0)); len(keys.Keys) != 1 {
		t.Fatalf("listed %d keys", len(keys.Keys))
	}
	w := must[[]byte](t)(c.Wrap(ctx, key.ID, b64([]byte("0123456789abcdef")), nil))
	must[[]byte](t)(c.Unwrap(ctx, key.ID, w, nil))
	ok(t, c.Rotate(ctx, key.ID, ""))

	_, err = client(tokenFor(bobKey)).Wrap(ctx, key.ID, b64([]byte("0123456789abcdef")), nil)
	wantErr(t, err, 403, "")
	_, err = client("not-a-jwt").GetKeys(ctx, 0, 0)
	wantErr(t, err, 401, "UNAUTHORIZED_ERR")

	// messagehub, authorized as Reader on the instance, registers its
	// deployment and wraps its DEK with a service token.
	ie.Authorize(t, "messagehub", "", target, auth.RoleReader)
	depCRN := "crn:v1:bluemix:public:messagehub:us-south:a/" + ie.Account.ID + ":dep-0001::"
	st, err := ie.Service.ServiceToken("messagehub", ie.Account.ID, "dep-0001", depCRN)
	ok(t, err)
	mh := client(st.AccessToken)
	dek := must[[]byte](t)(mh.Wrap(ctx, key.ID, b64([]byte("deployment dek!!")), &[]string{"dep-0001"}))
	must[[]byte](t)(mh.Unwrap(ctx, key.ID, dek, &[]string{"dep-0001"}))
	body := `{"metadata":{"collectionType":"application/vnd.ibm.kms.registration_input+json","collectionTotal":1},"resources":[{"preventKeyDeletion":false}]}`
	req, _ := http.NewRequest("POST", srv.URL+"/api/v2/keys/"+key.ID+"/registrations/"+url.QueryEscape(depCRN), strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+st.AccessToken)
	req.Header.Set("Bluemix-Instance", instance)
	resp, err := http.DefaultClient.Do(req)
	ok(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("registration = %d %s", resp.StatusCode, b)
	}
	_, err = c.DeleteKey(ctx, key.ID, kp.ReturnMinimal)
	wantErr(t, err, 409, "PROTECTED_RESOURCE_ERR")
	// The service may wrap but not manage keys.
	_, err = mh.CreateRootKey(ctx, "service-made", nil)
	wantErr(t, err, 403, "")
}
