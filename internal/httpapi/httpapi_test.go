package httpapi

import (
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/errs"
)

func TestDecodeJSONSaysWhatIsWrong(t *testing.T) {
	type body struct {
		Name  string `json:"name"`
		Count int    `json:"count"`
	}
	for _, tc := range []struct {
		in       string
		required bool
		kind     errs.Kind
		msg      string
	}{
		{`{"name":"a"}`, true, 0, ""},
		{``, true, errs.Invalid, "Missing body"},
		{`null`, false, 0, ""},
		{`{"name":`, true, errs.Invalid, "truncated"},
		{`{"name":"a"`, true, errs.Invalid, "truncated"},
		{`{"nmae":"a"}`, true, errs.Invalid, `"nmae" is not allowed`},
		{`{"count":"x"}`, true, errs.Invalid, `"count" must be a int`},
		{`{"name":"a"} {}`, true, errs.Invalid, "after the JSON"},
		{`{` + strings.Repeat(" ", 2000) + `}`, true, errs.TooLarge, "larger than"},
		{`{]`, true, errs.Invalid, "not valid JSON"},
	} {
		r := httptest.NewRequest("POST", "/", strings.NewReader(tc.in))
		var b body
		err := DecodeJSON(r, &b, 1000, tc.required)
		if tc.msg == "" {
			if err != nil {
				t.Errorf("%q: %v", tc.in, err)
			}
			continue
		}
		if errs.KindOf(err) != tc.kind || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: got %v (kind %v), want kind %v mentioning %q", tc.in, err, errs.KindOf(err), tc.kind, tc.msg)
		}
	}
}

func TestBearerTokenNeedsTheBearerScheme(t *testing.T) {
	for _, tc := range []struct{ header, token string }{
		{"Bearer abc", "abc"}, {"bearer  abc ", "abc"}, {"", ""}, {"Basic abc", ""}, {"Bearer ", ""},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.header != "" {
			r.Header.Set("Authorization", tc.header)
		}
		got, err := BearerToken(r)
		if got != tc.token || (tc.token == "") != (err != nil) {
			t.Errorf("%q: got %q, %v", tc.header, got, err)
		}
	}
}

// TestReadJSONReadsBodiesOfAnySizeAndLength: the body is read whole
// whether its Content-Length is known, unknown, or smaller than what a
// buffer starts with, and refused only past the limit.
func TestReadJSONReadsBodiesOfAnySizeAndLength(t *testing.T) {
	const limit = 4000
	for _, size := range []int{1, 2, 100, 511, 512, 513, 1024, 3999, limit, limit + 1, 9000} {
		for _, known := range []bool{true, false} {
			in := "1"
			if size > 1 {
				in = `"` + strings.Repeat("a", size-2) + `"`
			}
			r := httptest.NewRequest("POST", "/", strings.NewReader(in))
			if !known {
				r.ContentLength = -1
			}
			got, err := ReadJSON(r, limit, true)
			if size > limit {
				if errs.KindOf(err) != errs.TooLarge {
					t.Errorf("size %d (length known: %v): %v, want too large", size, known, err)
				}
				continue
			}
			if err != nil || string(got) != in {
				t.Errorf("size %d (length known: %v): read %d bytes, %v", size, known, len(got), err)
			}
		}
	}
}
