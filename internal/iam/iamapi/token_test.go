package iamapi_test

import (
	"net/url"
	"testing"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/iam/iamapi"
)

// FuzzDecodeTokenForm: any body either decodes to the values a form parser
// reads from it or is refused as bad input; nothing panics.
func FuzzDecodeTokenForm(f *testing.F) {
	f.Add("grant_type=urn%3Aibm%3Aparams%3Aoauth%3Agrant-type%3Aapikey&apikey=abc")
	f.Add("grant_type=refresh_token&refresh_token=x.y.z")
	f.Add("grant_type=a&grant_type=b")
	f.Add("%zz=1&apikey")
	f.Add(";;&&==")
	f.Fuzz(func(t *testing.T, body string) {
		req, err := iamapi.DecodeTokenForm([]byte(body))
		if err != nil {
			if !errs.Is(errs.Invalid, err) {
				t.Fatalf("error of kind %v: %v", errs.KindOf(err), err)
			}
			return
		}
		v, perr := url.ParseQuery(body)
		if perr != nil {
			t.Fatalf("accepted a body url.ParseQuery refuses: %v", perr)
		}
		if req.GrantType != v.Get("grant_type") || req.APIKey != v.Get("apikey") || req.RefreshToken != v.Get("refresh_token") {
			t.Fatalf("decoded %+v from %q", req, body)
		}
	})
}
