package controller

import (
	"testing"
	"time"

	"github.com/keyline/keyline/internal/errs"
)

func TestRegionAcceptsIBMTargetNames(t *testing.T) {
	svc := EventStreams()
	for _, tc := range []struct {
		target, want string
		ok           bool
	}{
		{"us-south", "us-south", true},
		{"blue-ca-tor", "ca-tor", true},
		{"bluemix-eu-gb", "eu-gb", true},
		{" EU-DE ", "eu-de", true},
		{"ca-mon", "", false},
		{"blue-", "", false},
		{"red-us-south", "", false},
		{"us-south-1", "", false},
		{"", "", false},
	} {
		got, ok := svc.region(tc.target)
		if got != tc.want || ok != tc.ok {
			t.Errorf("region(%q) = %q, %v; want %q, %v", tc.target, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFindPlanByIDOrName(t *testing.T) {
	kp, es := &catalogEntry{svc: KeyProtect()}, &catalogEntry{svc: EventStreams()}
	other := &catalogEntry{svc: CatalogService{Name: "other", ID: "o", DisplayName: "Other", Plans: []Plan{{ID: "other-standard", Name: "standard"}}, Regions: []string{"us-south"}}}
	entries := []*catalogEntry{kp, es, other}
	for _, tc := range []struct {
		service, plan string
		want          *catalogEntry
		code          string
	}{
		{"", "eedd3585-90c6-4c8f-be3d-062069e99fc3", kp, ""},
		{"", "tiered-pricing", kp, ""},
		{"", "eventstreams-gen2-standard", es, ""},
		{"", "standard", nil, "AMBIGUOUS_PLAN"},
		{"messagehub", "standard", es, ""},
		{"messagehub", "enterprise", es, ""},
		{"", "eventstreams-gen2-enterprise", es, ""},
		{"dff97f5c-bc5e-4455-b470-411c3edbe49c", "standard", es, ""},
		{"other", "standard", other, ""},
		{"kms", "standard", nil, "INVALID_PLAN"},
		{"", "lite", nil, "INVALID_PLAN"},
		{"cloudant", "lite", nil, "INVALID_SERVICE"},
	} {
		got, _, err := findPlan(entries, tc.service, tc.plan)
		code := ""
		if e := errs.As(err); e != nil {
			code = e.Code
		}
		if got != tc.want || code != tc.code {
			t.Errorf("findPlan(%q, %q) = %v, %q; want %v, %q", tc.service, tc.plan, got, code, tc.want, tc.code)
		}
	}
}

func TestRegisterRefusesBadCatalogEntries(t *testing.T) {
	c := &Controller{}
	for _, tc := range []struct {
		name string
		svc  CatalogService
	}{
		{"no name", CatalogService{ID: "x", DisplayName: "X", Plans: []Plan{{"p", "p"}}, Regions: []string{"us-south"}}},
		{"upper-case name", CatalogService{Name: "KMS", ID: "x", DisplayName: "X", Plans: []Plan{{"p", "p"}}, Regions: []string{"us-south"}}},
		{"no plans", CatalogService{Name: "x", ID: "x", DisplayName: "X", Regions: []string{"us-south"}}},
		{"no regions", CatalogService{Name: "x", ID: "x", DisplayName: "X", Plans: []Plan{{"p", "p"}}}},
		{"plan without name", CatalogService{Name: "x", ID: "x", DisplayName: "X", Plans: []Plan{{"p", ""}}, Regions: []string{"us-south"}}},
		{"default key role by name", CatalogService{Name: "x", ID: "x", DisplayName: "X", Plans: []Plan{{"p", "p"}}, Regions: []string{"us-south"}, DefaultKeyRole: "Manager"}},
		{"negative window", CatalogService{Name: "x", ID: "x", DisplayName: "X", Plans: []Plan{{"p", "p"}}, Regions: []string{"us-south"}, ReclamationWindow: -time.Hour}},
	} {
		if err := c.Register(tc.svc, nopBroker{}); errs.KindOf(err) != errs.Invalid {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if err := c.Register(KeyProtect(), nil); errs.KindOf(err) != errs.Invalid {
		t.Errorf("nil broker: %v", err)
	}
	if err := c.Register(KeyProtect(), nopBroker{}); err != nil {
		t.Fatal(err)
	}
	dupPlan := EventStreams()
	dupPlan.Plans = append(dupPlan.Plans, KeyProtect().Plans[0])
	if err := c.Register(dupPlan, nopBroker{}); errs.KindOf(err) != errs.Conflict {
		t.Errorf("a plan id offered twice: %v", err)
	}
	if got := len(c.Catalog()); got != 1 {
		t.Errorf("catalog has %d services", got)
	}
	if w := KeyProtect().window(); w != 9*24*time.Hour {
		t.Errorf("default reclamation window %v", w)
	}
}

func TestRetryDelayBacksOffToAnHour(t *testing.T) {
	for attempts, want := range map[int]time.Duration{0: time.Minute, 1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 6: 32 * time.Minute, 7: time.Hour, 50: time.Hour} {
		if got := retryDelay(attempts); got != want {
			t.Errorf("retryDelay(%d) = %v, want %v", attempts, got, want)
		}
	}
}

type nopBroker struct{ ServiceBroker }
