package iam_test

import (
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/iam/iamtest"
)

func streamsPolicy(e *iamtest.Env, iamID string, attrs ...iam.ResourceAttribute) iam.PolicyRequest {
	base := []iam.ResourceAttribute{{Name: "accountId", Value: e.Account.ID}, {Name: "serviceName", Value: "messagehub"},
		{Name: "serviceInstance", Value: "es-1"}}
	return iam.PolicyRequest{Type: iam.TypeAccess, Roles: []iam.PolicyRole{{RoleID: auth.RoleWriter}},
		Subjects:  []iam.PolicySubject{{Attributes: []iam.SubjectAttribute{{Name: "iam_id", Value: iamID}}}},
		Resources: []iam.PolicyResource{{Attributes: append(base, attrs...)}}}
}

func TestStreamsResourceTypesAreValidated(t *testing.T) {
	e := iamtest.New(t)
	u, _ := e.NewUser(t, "dev@example.com")
	tests := []struct {
		name  string
		attrs []iam.ResourceAttribute
		want  string // "" when accepted
	}{
		{"a topic by name", []iam.ResourceAttribute{{Name: "resourceType", Value: "topic"}, {Name: "resource", Value: "orders"}}, ""},
		{"a topic prefix", []iam.ResourceAttribute{{Name: "resourceType", Value: "topic"}, {Name: "resource", Value: "orders-*"}}, ""},
		{"every group", []iam.ResourceAttribute{{Name: "resourceType", Value: "group"}, {Name: "resource", Value: "*", Operator: "stringMatch"}}, ""},
		{"a transactional id", []iam.ResourceAttribute{{Name: "resourceType", Value: "txnid"}, {Name: "resource", Value: "t1"}}, ""},
		{"the cluster", []iam.ResourceAttribute{{Name: "resourceType", Value: "cluster"}}, ""},
		{"an unknown type", []iam.ResourceAttribute{{Name: "resourceType", Value: "queue"}}, `"queue" is not an Event Streams resource type: use cluster, topic, group, txnid`},
		{"a named cluster", []iam.ResourceAttribute{{Name: "resourceType", Value: "cluster"}, {Name: "resource", Value: "kafka-cluster"}}, "a policy on the Event Streams cluster names no resource"},
		{"a wildcard inside", []iam.ResourceAttribute{{Name: "resourceType", Value: "topic"}, {Name: "resource", Value: "or*ers"}}, "a wildcard * may only end the value"},
		{"a wildcard with stringEquals", []iam.ResourceAttribute{{Name: "resourceType", Value: "topic"}, {Name: "resource", Value: "orders-*", Operator: "stringEquals"}}, "needs the operator stringMatch"},
		{"a wildcard in another attribute", []iam.ResourceAttribute{{Name: "resourceType", Value: "top*"}}, "without wildcards"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.Service.CreatePolicy(e.AsAdmin(), streamsPolicy(e, u.IAMID, tt.attrs...))
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			ee := errs.As(err)
			if ee == nil || ee.Kind != errs.Invalid || ee.Code != "invalid_body" || !strings.Contains(ee.Msg, tt.want) {
				t.Fatalf("got %v, want invalid_body saying %q", err, tt.want)
			}
		})
	}
}

func TestResourceGrantsAndWildcardAuthorization(t *testing.T) {
	e := iamtest.New(t)
	u, _ := e.NewUser(t, "dev@example.com")
	other, _ := e.NewUser(t, "ops@example.com")
	for _, attrs := range [][]iam.ResourceAttribute{
		{{Name: "resourceType", Value: "topic"}, {Name: "resource", Value: "orders-*"}},
		{{Name: "resourceType", Value: "group"}, {Name: "resource", Value: "g1"}},
		{{Name: "resourceType", Value: "cluster"}},
	} {
		if _, err := e.Service.CreatePolicy(e.AsAdmin(), streamsPolicy(e, u.IAMID, attrs...)); err != nil {
			t.Fatal(err)
		}
	}
	es1 := auth.Resource{AccountID: e.Account.ID, ServiceName: "messagehub", ServiceInstance: "es-1"}
	p := &auth.Principal{IAMID: u.IAMID, AccountID: e.Account.ID, Type: auth.User}
	grants, err := e.Service.ResourceGrants(e.AsAdmin(), p, es1)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]bool{}
	for _, g := range grants {
		got[g.ResourceType+"/"+g.Resource] = auth.Allows(g.Actions, auth.MessageWrite)
	}
	if len(got) != 3 || !got["topic/orders-*"] || !got["group/g1"] || !got["cluster/"] {
		t.Fatalf("grants %v: want writer grants on topic orders-*, group g1 and the cluster", got)
	}
	es2 := es1
	es2.ServiceInstance = "es-2"
	if grants, _ := e.Service.ResourceGrants(e.AsAdmin(), p, es2); len(grants) != 0 {
		t.Fatalf("grants on another instance: %v", grants)
	}
	if grants, _ := e.Service.ResourceGrants(e.AsAdmin(), &auth.Principal{IAMID: other.IAMID, Type: auth.User}, es1); len(grants) != 0 {
		t.Fatalf("another user's grants: %v", grants)
	}
	topic := func(name string) auth.Resource {
		r := es1
		r.ResourceType, r.ResourceID = "topic", name
		return r
	}
	if err := e.Service.Authorize(e.AsAdmin(), p, auth.MessageWrite, topic("orders-eu")); err != nil {
		t.Fatalf("a topic the prefix covers: %v", err)
	}
	if err := e.Service.Authorize(e.AsAdmin(), p, auth.MessageWrite, topic("payments")); errs.KindOf(err) != errs.Permission {
		t.Fatalf("a topic the prefix does not cover: %v", err)
	}
	if err := e.Service.Authorize(e.AsAdmin(), p, auth.MessageWrite, es1); errs.KindOf(err) != errs.Permission {
		t.Fatalf("a scoped policy must not grant the whole instance: %v", err)
	}
}
