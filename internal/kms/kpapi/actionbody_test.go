package kpapi

import (
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/kms"
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

// FuzzActionAnswerWritesAsWriteJSON checks the wrap/unwrap answer writer
// against httpapi.WriteJSON, byte for byte and header for header.
func FuzzActionAnswerWritesAsWriteJSON(f *testing.F) {
	f.Add("WlpaWlpa+/==", "eyJjaXBoZXJ0ZXh0Ijoi", "34738b50-a268-498e-8e3a-869d55578aee", int64(1796000000123456789), uint8(7))
	f.Add("", "", "", int64(0), uint8(0))
	f.Add("a\"b", "<&>", "\u2028é\x00", int64(-62135596800), uint8(15))
	f.Add("x", "y", "z", int64(253402300800), uint8(5)) // year 10000: time's MarshalJSON refuses it
	f.Fuzz(func(t *testing.T, pt, ct, id string, unixNano int64, mask uint8) {
		out := actionResponse{Plaintext: pt, Ciphertext: ct}
		when := time.Unix(0, unixNano).UTC()
		if mask&8 != 0 {
			when = time.Unix(unixNano, 0).UTC()
		}
		if mask&1 != 0 {
			out.KeyVersion = &kms.KeyVersion{ID: id}
			if mask&2 != 0 {
				out.KeyVersion.CreationDate = &when
			}
		}
		if mask&4 != 0 {
			out.RewrappedKeyVersion = &kms.KeyVersion{ID: pt, CreationDate: &when}
		}
		fast, slow := httptest.NewRecorder(), httptest.NewRecorder()
		writeAction(fast, out)
		httpapi.WriteJSON(slow, http.StatusOK, out)
		if fast.Code != slow.Code || !reflect.DeepEqual(fast.Header(), slow.Header()) || fast.Body.String() != slow.Body.String() {
			t.Fatalf("writeAction: %d %v %q\nWriteJSON:   %d %v %q", fast.Code, fast.Header(), fast.Body, slow.Code, slow.Header(), slow.Body)
		}
	})
}

// TestActionAnswerBufferKeepsNoDEK: writeAction reuses its buffers, and an
// unwrap's answer holds the DEK; a buffer back in the pool holds none of it,
// and a longer answer before a shorter one leaves nothing in the shorter.
func TestActionAnswerBufferKeepsNoDEK(t *testing.T) {
	dek := "U0VDUkVULURFSy1TRUNSRVQtREVLLVNFQ1JFVC1ERUstU0VDUkVULURFSy0="
	for range 10 {
		long := httptest.NewRecorder()
		writeAction(long, actionResponse{Plaintext: dek, KeyVersion: &kms.KeyVersion{ID: "34738b50-a268-498e-8e3a-869d55578aee"}})
		if !strings.Contains(long.Body.String(), dek) {
			t.Fatalf("answer %q", long.Body)
		}
		buf := answerBuffers.Get().(*[]byte)
		if strings.Contains(string((*buf)[:cap(*buf)]), "U0VDUkVU") {
			t.Fatal("a pooled answer buffer still holds the DEK")
		}
		answerBuffers.Put(buf)
		short := httptest.NewRecorder()
		writeAction(short, actionResponse{Ciphertext: "eHl6"})
		if short.Body.String() != "{\"ciphertext\":\"eHl6\"}\n" {
			t.Fatalf("short answer after a long one: %q", short.Body)
		}
	}
}
