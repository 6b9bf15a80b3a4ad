package crn

import (
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/race"
)

func TestParseRoundTripsRealCRNs(t *testing.T) {
	for _, s := range []string{
		"crn:v1:bluemix:public:kms:us-south:a/f047b55a3362ac06afad8a3f2f5586ea:12e8c9c2-a162-472d-b7d6-8b9a86b815a6::",
		"crn:v1:bluemix:public:kms:us-south:a/f047b55a3362ac06afad8a3f2f5586ea:12e8c9c2-a162-472d-b7d6-8b9a86b815a6:key:02fd6835-6001-4482-a892-13bd2085f75d",
		"crn:v1:bluemix:public:cloud-object-storage:global:a/59bcbfa6ea2f006b4ed7094c1a08dcdd:1a0ec336-f391-4091-a6fb-5e084a4c56f4:bucket:mybucket",
		"crn:v1:bluemix:public:iam::::serviceRole:Reader",
		"crn:v1:bluemix:public:resource-controller:global:a/59bcbfa6ea2f006b4ed7094c1a08dcdd::resource-group:59bcbfa6ea2f006b4ed7094c1a08dcdd",
	} {
		c, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		if got := c.String(); got != s {
			t.Errorf("round trip: got %q want %q", got, s)
		}
	}
}

func TestParseSaysWhatIsWrong(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"02fd6835-6001-4482-a892-13bd2085f75d", "starts with"},
		{"crn:v1:bluemix:public:kms:us-south", "10 segments"},
		{"crn:v2:bluemix:public:kms:us-south:a/acct:inst:key:id", "version"},
		{"crn:v1:bluemix:private:kms:us-south:a/acct:inst:key:id", "ctype"},
		{"crn:v1:bluemix:public:KMS:us-south:a/acct:inst:key:id", "service-name"},
		{"crn:v1:bluemix:public:kms:us-south:acct:inst:key:id", "scope"},
		{"crn:v1:bluemix:public:kms:us-south:a/acct:inst:key:", "both"},
		{"crn:v1:bluemix:public:kms:us-south:a/acct:inst:key:a b", "resource segment"},
		{"crn:" + strings.Repeat("x", 600), "512"},
	} {
		_, err := Parse(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q) = %v, want an error about %q", tc.in, err, tc.want)
		}
	}
}

func TestPatternMatchesWildcardsAndPrefixes(t *testing.T) {
	const dep = "crn:v1:bluemix:public:messagehub:us-south:a/acct:dep-1::"
	for _, tc := range []struct {
		pattern string
		crn     string
		want    bool
	}{
		{"crn:v1:bluemix:public:messagehub:us-south:a/acct:*:*:*", dep, true},
		{"crn:v1:bluemix:public:messagehub:us-south:a/acct:dep-1:*:*", dep, true},
		{"crn:v1:bluemix:public:messagehub:us-south:a/other:*:*:*", dep, false},
		{"crn:v1:bluemix:public:cloud-object-storage:global:a/acct:*:bucket:prod*", "crn:v1:bluemix:public:cloud-object-storage:global:a/acct:i:bucket:prod-1", true},
		{"crn:v1:bluemix:public:cloud-object-storage:global:a/acct:*:bucket:prod*", "crn:v1:bluemix:public:cloud-object-storage:global:a/acct:i:bucket:dev-1", false},
	} {
		p, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("ParsePattern(%q): %v", tc.pattern, err)
		}
		if got := p.Match(tc.crn); got != tc.want {
			t.Errorf("%q matches %q = %v, want %v", tc.pattern, tc.crn, got, tc.want)
		}
	}
	if _, err := ParsePattern("crn:v1:blue*:public:kms:us-south:a/acct:*:*:*"); err == nil {
		t.Error("a prefix wildcard before the last segment was accepted")
	}
}

func FuzzParse(f *testing.F) {
	f.Add("crn:v1:bluemix:public:kms:us-south:a/acct:inst:key:id")
	f.Add("crn:v1:bluemix:public:iam::::serviceRole:Reader")
	f.Add("crn:::::::::")
	f.Add("crn:v1:bluemix:public:kms:us-south:a/:inst::")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(c.String())
		if err != nil || again != c {
			t.Fatalf("a parsed CRN does not round-trip: %q -> %q (%v)", s, c.String(), err)
		}
	})
}

func FuzzParsePattern(f *testing.F) {
	f.Add("crn:v1:bluemix:public:kms:us-south:a/acct:*:*:*", "crn:v1:bluemix:public:kms:us-south:a/acct:i::")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		p, err := ParsePattern(pattern)
		if err != nil {
			return
		}
		if p.Match(pattern) != p.Match(pattern) {
			t.Fatal("match is not deterministic")
		}
		_ = p.Match(s)
	})
}

func TestParseKeyKeepsTheCRNAndItsParts(t *testing.T) {
	const s = "crn:v1:bluemix:public:kms:us-south:a/f047b55a3362ac06afad8a3f2f5586ea:12e8c9c2-a162-472d-b7d6-8b9a86b815a6:key:02fd6835-6001-4482-a892-13bd2085f75d"
	k, err := ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	want := KeyRef{CRN: s, Account: "f047b55a3362ac06afad8a3f2f5586ea", Region: "us-south",
		Instance: "12e8c9c2-a162-472d-b7d6-8b9a86b815a6", ID: "02fd6835-6001-4482-a892-13bd2085f75d"}
	if k != want || k.String() != s || k.IsZero() {
		t.Fatalf("ParseKey = %+v, want %+v", k, want)
	}
}

func TestParseKeySaysWhatIsWrong(t *testing.T) {
	for _, tc := range []struct{ in, code, want string }{
		// Malformed: Parse's own precise errors.
		{"02fd6835-6001-4482-a892-13bd2085f75d", "INVALID_CRN", "starts with"},
		{"crn:v1:bluemix:public:kms:us-south", "INVALID_CRN", "10 segments"},
		{"crn:v1:bluemix:public:kms:us-south:acct:inst:key:id", "INVALID_CRN", "scope"},
		{"crn:v1:bluemix:public:kms:us-south:a/acct:inst:key:a b", "INVALID_CRN", "resource segment"},
		// Well formed, but not a key.
		{"crn:v1:bluemix:public:messagehub:us-south:a/acct:inst:key:id", NotKeyCode, "Key Protect key"},
		{"crn:v1:bluemix:public:kms:us-south:a/acct:inst::", NotKeyCode, "Key Protect key"},
		{"crn:v1:bluemix:public:kms:us-south:a/acct:inst:ring:id", NotKeyCode, "Key Protect key"},
		{"crn:v1:bluemix:public:kms:us-south:a/acct::key:id", NotKeyCode, "Key Protect key"},
	} {
		k, err := ParseKey(tc.in)
		e := errs.As(err)
		if e == nil || e.Kind != errs.Invalid || e.Code != tc.code || !strings.Contains(e.Msg, tc.want) {
			t.Errorf("ParseKey(%q) = %v, want %s about %q", tc.in, err, tc.code, tc.want)
		}
		if !k.IsZero() {
			t.Errorf("ParseKey(%q) gave %+v with its error", tc.in, k)
		}
	}
}

// TestParseAllocatesNothing: every audit event parses its target's CRN.
func TestParseAllocatesNothing(t *testing.T) {
	if race.Enabled {
		t.Skip("the race detector allocates on its own")
	}
	s := "crn:v1:bluemix:public:kms:us-south:a/0123456789abcdef0123456789abcdef:b3c1d2e3-0000-4000-8000-00000000beef:key:66c6b928-16a7-4477-9bba-17d956403772"
	allocs := testing.AllocsPerRun(100, func() {
		if c, err := Parse(s); err != nil || c.Resource != "66c6b928-16a7-4477-9bba-17d956403772" {
			t.Fatal(c, err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Parse allocates %v objects", allocs)
	}
}
