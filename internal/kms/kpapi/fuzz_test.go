package kpapi_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// serve runs one request through the API's handler without a network.
func (e *env) serve(method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/api/v2/"+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+manager)
	req.Header.Set("Bluemix-Instance", instance)
	rec := httptest.NewRecorder()
	e.srv.Config.Handler.ServeHTTP(rec, req)
	return rec
}

// checkAnswer fails on a server error or an error body that is not Key
// Protect's.
func checkAnswer(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("server error %d: %s", rec.Code, rec.Body)
	}
	if rec.Code >= 400 {
		var eb struct {
			Resources []struct {
				ErrorMsg string `json:"errorMsg"`
			} `json:"resources"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || len(eb.Resources) != 1 || eb.Resources[0].ErrorMsg == "" {
			t.Fatalf("error %d without a Key Protect body: %s", rec.Code, rec.Body)
		}
	}
}

func FuzzKeyActionRequest(f *testing.F) {
	for _, s := range []string{`{}`, `null`, ``, `{"plaintext":"AAAAAAAAAAAAAAAAAAAAAA=="}`, `{"plaintext":"AAAA","aad":["a","b"]}`,
		`{"ciphertext":"AQ=="}`, `{"CipherText":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="}`, `{"aad":[1]}`,
		`{"plaintext":null}`, `[]`, `{"payload":"AAAA"}`, `{"plaintext":"` + strings.Repeat("QUFB", 3000) + `"}`} {
		for _, a := range []string{"wrap", "unwrap", "rewrap", "rotate", "disable", "enable", "sync", "setKeyForDeletion"} {
			f.Add(a, s)
		}
	}
	e := newEnv(f)
	key, err := e.client(manager).CreateRootKey(e.ctx, "fuzz", nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, action, body string) {
		checkAnswer(t, e.serve("POST", "keys/"+key.ID+"/actions/"+url.PathEscape(action), body))
	})
}

func FuzzCreateKeyRequest(f *testing.F) {
	for _, s := range []string{
		`{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"ab","extractable":false}]}`,
		`{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"ab","extractable":true,"payload":"AAAA"}]}`,
		`{"metadata":{"collectionType":"application/vnd.ibm.kms.key+json","collectionTotal":1},"resources":[{"name":"ab","aliases":["x1","x2"],"Tags":["tt"],"expirationDate":"2030-01-01T00:00:00Z"}]}`,
		`{"metadata":{"collectionType":"x","collectionTotal":0},"resources":[]}`,
		`{"metadata":null,"resources":null}`, `{}`, `null`, `"x"`,
	} {
		f.Add(s)
	}
	e := newEnv(f)
	f.Fuzz(func(t *testing.T, body string) {
		checkAnswer(t, e.serve("POST", "keys", body))
		checkAnswer(t, e.serve("POST", "keys_with_policy_overrides", body))
	})
}

func FuzzRegistrationRequest(f *testing.F) {
	f.Add("crn:v1:bluemix:public:messagehub:us-south:a/acct-0001:dep::", `{"metadata":{"collectionType":"x","collectionTotal":1},"resources":[{"preventKeyDeletion":true}]}`)
	f.Add("crn%3Av1", `{"metadata":{"collectionType":"x","collectionTotal":1},"resources":[{"keyVersion":{"id":"x"}}]}`)
	f.Add("", ``)
	e := newEnv(f)
	key, err := e.client(manager).CreateRootKey(e.ctx, "fuzz", nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, crn, body string) {
		for _, m := range []string{http.MethodPost, http.MethodPatch, http.MethodPut, http.MethodDelete} {
			req := httptest.NewRequest(m, "/api/v2/keys/"+key.ID+"/registrations/x", strings.NewReader(body))
			req.URL.Path = "/api/v2/keys/" + key.ID + "/registrations/" + crn
			req.URL.RawPath = ""
			req.Header.Set("Authorization", "Bearer "+messagehb)
			req.Header.Set("Bluemix-Instance", instance)
			rec := httptest.NewRecorder()
			e.srv.Config.Handler.ServeHTTP(rec, req)
			checkAnswer(t, rec)
		}
	})
}
