package kpapi

import (
	"reflect"
	"testing"

	"github.com/keyline/keyline/internal/httpapi"
)

// FuzzActionBodyFastPathDecodesAsEncodingJSON checks that every body the
// wrap/unwrap fast path takes, encoding/json (with the API's rules: no
// unknown fields, no trailing data) takes too and decodes to the same
// request; what the fast path leaves, encoding/json answers as before.
func FuzzActionBodyFastPathDecodesAsEncodingJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"plaintext":"WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo=","aad":["bench"]}`,
		`{"ciphertext":"AQ==","aad":[]}`, `{"ciphertext":"AQ==","aad":["a","b",""]}`, `{"plaintext":""}`,
		`{"Plaintext":"AA=="}`, `{"plaintext":"AA==","plaintext":"AQ=="}`, `{"plaintext":"A\"A"}`, `{"plaintext":"\u0041"}`,
		`{"aad":["a",]}`, `{"aad":["a"],}`, `{"aad":"a"}`, `{"plaintext":null}`, `{"plaintext":"AA=="}x`, `{"payload":"AA=="}`,
		`{"plaintext" :"AA=="}`, `{"aad":["a"]]}`, `{"plaintext":"AA==" }`, `{"plaintext":"é"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var fast actionRequest
		if !decodeActionFast([]byte(body), &fast) {
			return
		}
		var slow actionRequest
		if err := httpapi.DecodeJSONBytes([]byte(body), &slow); err != nil {
			t.Fatalf("the fast path took %q, which encoding/json refuses: %v", body, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: fast path %+v, encoding/json %+v", body, fast, slow)
		}
	})
}

// TestActionBodyFastPathTakesWhatClientsSend: the bodies IBM's clients and
// the bench send take the fast path; others are left to encoding/json.
func TestActionBodyFastPathTakesWhatClientsSend(t *testing.T) {
	for body, want := range map[string]bool{
		`{"plaintext":"WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo=","aad":["bench"]}`: true,
		`{"ciphertext":"eyJjaXBoZXJ0ZXh0Ijoi","aad":["a","b"]}`:                        true,
		`{}`:                  true,
		`{"Plaintext":"AA"}`:  false, // encoding/json matches keys without case
		`{"plaintext":"A\/"}`: false,
		`{"plaintext": "AA"}`: false,
		`{"payload":"AA"}`:    false,
		`{"aad":[1]}`:         false,
	} {
		var r actionRequest
		if got := decodeActionFast([]byte(body), &r); got != want {
			t.Errorf("%s: fast path %v, want %v", body, got, want)
		}
	}
}
