package iam_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/iam/iamtest"
)

func kmsInstance(e *iamtest.Env, guid string) auth.Resource {
	return auth.Resource{AccountID: e.Account.ID, ServiceName: "kms", ServiceInstance: guid}
}

func TestServiceRolesDecideKMSActions(t *testing.T) {
	e := iamtest.New(t)
	reader, _ := e.NewUser(t, "reader@example.com")
	writer, _ := e.NewUser(t, "writer@example.com")
	manager, _ := e.NewUser(t, "manager@example.com")
	inst := kmsInstance(e, "kp-1")
	e.Grant(t, reader.IAMID, inst, auth.RoleReader)
	e.Grant(t, writer.IAMID, inst, auth.RoleWriter)
	e.Grant(t, manager.IAMID, inst, auth.RoleManager)
	key := inst
	key.ResourceType, key.ResourceID = "key", "k1"

	tests := []struct {
		who    *auth.Principal
		action string
		allow  bool
	}{
		{reader, auth.KMSKeyList, true},
		{reader, auth.KMSKeyReadMetadata, true},
		{reader, auth.KMSKeyCreate, false},
		{reader, auth.KMSKeyWrap, false},
		{reader, auth.KMSKeyDelete, false},
		{writer, auth.KMSKeyList, true},
		{writer, auth.KMSKeyCreate, true},
		{writer, auth.KMSKeyWrap, true},
		{writer, auth.KMSKeyRotate, true},
		{writer, auth.KMSKeyDelete, false},
		{writer, auth.KMSKeyDisable, false},
		{manager, auth.KMSKeyDelete, true},
		{manager, auth.KMSKeyDisable, true},
		{manager, auth.KMSKeyPurge, false}, // KeyPurge is its own role
		{e.Admin, auth.KMSKeyPurge, true},
		{e.Admin, auth.KMSKeyDelete, true},
	}
	for _, tt := range tests {
		t.Run(tt.who.Name+"/"+tt.action, func(t *testing.T) {
			err := e.Service.Authorize(context.Background(), tt.who, tt.action, key)
			if tt.allow && err != nil {
				t.Fatalf("want allowed, got %v", err)
			}
			if !tt.allow {
				if !errs.Is(errs.Permission, err) {
					t.Fatalf("want a Permission error, got %v", err)
				}
				if !strings.Contains(err.Error(), tt.action) {
					t.Errorf("denial %q does not name the action", err)
				}
			}
		})
	}
}

func TestReaderOnOneInstanceOnly(t *testing.T) {
	e := iamtest.New(t)
	u, _ := e.NewUser(t, "ro@example.com")
	e.Grant(t, u.IAMID, kmsInstance(e, "kp-x"), auth.RoleReader)
	ctx := context.Background()
	tests := []struct {
		instance, action string
		allow            bool
	}{
		{"kp-x", auth.KMSKeyList, true},
		{"kp-x", auth.KMSKeyCreate, false},
		{"kp-x", auth.KMSKeyDelete, false},
		{"kp-x", auth.KMSKeyWrap, false},
		{"kp-y", auth.KMSKeyList, false},
	}
	for _, tt := range tests {
		err := e.Service.Authorize(ctx, u, tt.action, kmsInstance(e, tt.instance))
		if (err == nil) != tt.allow {
			t.Errorf("%s on %s: allowed=%v, want %v (%v)", tt.action, tt.instance, err == nil, tt.allow, err)
		}
	}
	// Another account's instance of the same GUID is not covered.
	other := auth.Resource{AccountID: "another", ServiceName: "kms", ServiceInstance: "kp-x"}
	if err := e.Service.Authorize(ctx, u, auth.KMSKeyList, other); err == nil {
		t.Error("a policy of one account allowed a call on another account")
	}
}

// servicePrincipal is a Keyline service acting for one of its instances.
func servicePrincipal(e *iamtest.Env, service, instance string) *auth.Principal {
	c := "crn:v1:bluemix:public:" + service + ":us-south:a/" + e.Account.ID + ":" + instance + "::"
	return &auth.Principal{IAMID: "crn-" + c, AccountID: e.Account.ID, Name: service, Type: auth.Service,
		ServiceName: service, SourceInstance: instance, SourceCRN: c}
}

func messagehub(e *iamtest.Env, instance string) *auth.Principal {
	return servicePrincipal(e, "messagehub", instance)
}

func TestAuthorizationLetsServiceWrapOnlyWhileItStands(t *testing.T) {
	e := iamtest.New(t)
	ctx := context.Background()
	es := messagehub(e, "es-x")
	kpY := kmsInstance(e, "kp-y")
	if err := e.Service.Authorize(ctx, es, auth.KMSKeyWrap, kpY); !errs.Is(errs.Permission, err) {
		t.Fatalf("wrap without authorization: %v", err)
	}
	pol := e.Authorize(t, "messagehub", "es-x", kpY, auth.RoleReader)
	tests := []struct {
		who    *auth.Principal
		action string
		target auth.Resource
		allow  bool
	}{
		{es, auth.KMSKeyWrap, kpY, true},
		{es, auth.KMSKeyUnwrap, kpY, true},
		{es, auth.KMSRegistrationCreate, kpY, true},
		{es, auth.KMSKeyDelete, kpY, false},
		{es, auth.KMSKeyWrap, kmsInstance(e, "kp-z"), false},
		{messagehub(e, "es-w"), auth.KMSKeyWrap, kpY, false},
	}
	for _, tt := range tests {
		err := e.Service.Authorize(ctx, tt.who, tt.action, tt.target)
		if (err == nil) != tt.allow {
			t.Errorf("%s %s on %s: allowed=%v, want %v (%v)", tt.who.SourceInstance, tt.action, tt.target.ServiceInstance, err == nil, tt.allow, err)
		}
	}
	if err := e.Service.DeletePolicy(e.AsAdmin(), pol.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.Service.Authorize(ctx, es, auth.KMSKeyWrap, kpY); !errs.Is(errs.Permission, err) {
		t.Fatalf("wrap right after the authorization was deleted: %v", err)
	}
	if _, err := e.Service.RestorePolicy(e.AsAdmin(), pol.ID, "*"); err != nil {
		t.Fatal(err)
	}
	if err := e.Service.Authorize(ctx, es, auth.KMSKeyWrap, kpY); err != nil {
		t.Fatalf("wrap after restore: %v", err)
	}
}

func TestDependentAuthorizationNeedsDelegator(t *testing.T) {
	e := iamtest.New(t)
	ctx := context.Background()
	es := messagehub(e, "es-x")
	kp := kmsInstance(e, "kp-1")
	create := func() (iam.Policy, error) {
		return e.Service.CreateDependentAuthorization(ctx, es, "is", kp, auth.RoleReader)
	}
	if _, err := create(); !errs.Is(errs.Permission, err) {
		t.Fatalf("without any authorization: %v", err)
	}
	readerOnly := e.Authorize(t, "messagehub", "", kp, auth.RoleReader)
	if _, err := create(); !errs.Is(errs.Permission, err) {
		t.Fatalf("with Reader only: %v", err)
	}
	if err := e.Service.DeletePolicy(e.AsAdmin(), readerOnly.ID); err != nil {
		t.Fatal(err)
	}
	delegator := e.Authorize(t, "messagehub", "", kp, auth.RoleReader, auth.RoleAuthorizationDelegator)

	var deleted []iam.Policy
	e.Service.OnAuthorizationDeleted(func(p iam.Policy) { deleted = append(deleted, p) })

	dep, err := create()
	if err != nil {
		t.Fatal(err)
	}
	if dep.CreatedByID != "crn-"+es.SourceCRN || dep.Origin() != "Created by "+es.SourceCRN {
		t.Errorf("created_by_id %q, origin %q", dep.CreatedByID, dep.Origin())
	}
	if delegator.Origin() != "User defined" {
		t.Errorf("user policy origin %q", delegator.Origin())
	}
	if dep.SubjectAttr("serviceName") != "is" || dep.ResourceAttr("serviceInstance") != "kp-1" || !dep.HasRole(auth.RoleReader) || len(dep.Roles) != 1 {
		t.Errorf("dependent policy %+v", dep)
	}
	again, err := create()
	if err != nil || again.ID != dep.ID {
		t.Errorf("re-creating returned %s, %v; want the existing %s", again.ID, err, dep.ID)
	}
	is := servicePrincipal(e, "is", "vol-1")
	if err := e.Service.Authorize(ctx, is, auth.KMSKeyUnwrap, kp); err != nil {
		t.Errorf("the dependent service cannot unwrap: %v", err)
	}
	if _, err := e.Service.CreateDependentAuthorization(ctx, es, "is", kmsInstance(e, "kp-2"), auth.RoleReader); !errs.Is(errs.Permission, err) {
		t.Errorf("delegation outside the delegated instance: %v", err)
	}
	if _, err := e.Service.CreateDependentAuthorization(ctx, es, "is", kp, auth.RoleManager); !errs.Is(errs.Invalid, err) {
		t.Errorf("delegating Manager: %v", err)
	}

	list, err := e.Service.ListAuthorizations(e.AsAdmin(), e.Account.ID, iam.PolicyFilter{SourceName: "is"})
	if err != nil || len(list) != 1 || list[0].ID != dep.ID {
		t.Fatalf("ListAuthorizations(source is) = %v, %v", list, err)
	}
	if err := e.Service.DeleteAuthorization(e.AsAdmin(), dep.ID); err != nil {
		t.Fatal(err)
	}
	if len(deleted) != 1 || deleted[0].ID != dep.ID || deleted[0].State != iam.StateDeleted {
		t.Fatalf("hook saw %v", deleted)
	}
	if err := e.Service.Authorize(ctx, is, auth.KMSKeyUnwrap, kp); err == nil {
		t.Error("the dependent service still unwraps after its authorization was deleted")
	}
	// The delegation still stands, so the source can re-create what was deleted.
	if _, err := create(); err != nil {
		t.Errorf("re-creating after deletion: %v", err)
	}
}

func TestAdministratorIsAllowedByPolicyNotByBypass(t *testing.T) {
	e := iamtest.New(t)
	ctx := e.AsAdmin()
	list, err := e.Service.ListPolicies(ctx, iam.PolicyFilter{AccountID: e.Account.ID, IAMID: e.Admin.IAMID})
	if err != nil || len(list.Policies) != 1 {
		t.Fatalf("admin policies: %v, %v", list.Policies, err)
	}
	if err := e.Service.DeletePolicy(ctx, list.Policies[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := e.Service.Authorize(context.Background(), e.Admin, auth.KMSKeyList, kmsInstance(e, "kp")); !errs.Is(errs.Permission, err) {
		t.Fatalf("admin without its policy: %v", err)
	}
}

func TestBootstrapOnceAndStateSurvivesRestart(t *testing.T) {
	e := iamtest.New(t)
	tok, err := e.Service.Token(context.Background(), iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: e.AdminKey})
	if err != nil {
		t.Fatal(err)
	}
	e.Reopen(t)
	acct, key, created, err := e.Service.Bootstrap(context.Background(), "")
	if err != nil || created || key != "" || acct.ID != e.Account.ID {
		t.Fatalf("second Bootstrap: %+v %q %v %v", acct, key, created, err)
	}
	p, err := e.Service.AuthenticateToken(context.Background(), tok.AccessToken)
	if err != nil {
		t.Fatalf("a token from before the restart: %v", err)
	}
	if err := e.Service.Authorize(context.Background(), p, auth.KMSKeyDelete, kmsInstance(e, "kp")); err != nil {
		t.Fatalf("admin after restart: %v", err)
	}
}

func TestBootstrapRefusesShortAdminKey(t *testing.T) {
	e := iamtest.New(t)
	if _, _, _, err := e.Service.Bootstrap(context.Background(), "short"); !errs.Is(errs.Invalid, err) {
		t.Fatalf("short key: %v", err)
	}
}

// The backup service re-creates a dependent authorization the user deleted
// from inside the deletion hook; that must neither deadlock nor fail.
func TestDependentAuthorizationRecreatedFromDeletionHook(t *testing.T) {
	e := iamtest.New(t)
	ctx := context.Background()
	es := messagehub(e, "es-x")
	kp := kmsInstance(e, "kp-1")
	e.Authorize(t, "messagehub", "es-x", kp, auth.RoleReader, auth.RoleAuthorizationDelegator)
	dep, err := e.Service.CreateDependentAuthorization(ctx, es, "is", kp, auth.RoleReader)
	if err != nil {
		t.Fatal(err)
	}
	var recreated iam.Policy
	var hookErr error
	e.Service.OnAuthorizationDeleted(func(p iam.Policy) {
		if p.CreatedByID == "crn-"+es.SourceCRN {
			recreated, hookErr = e.Service.CreateDependentAuthorization(ctx, es, p.SubjectAttr("serviceName"), kp, auth.RoleReader)
		}
	})
	if err := e.Service.DeleteAuthorization(e.AsAdmin(), dep.ID); err != nil {
		t.Fatal(err)
	}
	if hookErr != nil || recreated.ID == "" || recreated.ID == dep.ID || recreated.State != iam.StateActive {
		t.Fatalf("re-created %+v, %v", recreated, hookErr)
	}
	is := servicePrincipal(e, "is", "vol-1")
	if err := e.Service.Authorize(ctx, is, auth.KMSKeyWrap, kp); err != nil {
		t.Fatalf("after re-creation: %v", err)
	}
}

func TestSourceInstanceDeletionRemovesWhatItDelegated(t *testing.T) {
	e := iamtest.New(t)
	ctx := context.Background()
	es := messagehub(e, "es-x")
	kp := kmsInstance(e, "kp-1")
	delegator := e.Authorize(t, "messagehub", "", kp, auth.RoleReader, auth.RoleAuthorizationDelegator)
	dep, err := e.Service.CreateDependentAuthorization(ctx, es, "is", kp, auth.RoleReader)
	if err != nil {
		t.Fatal(err)
	}
	// Another instance may not delete what es-x created.
	if err := e.Service.DeleteAuthorizationsCreatedBy(ctx, messagehub(e, "es-other")); err != nil {
		t.Fatal(err)
	}
	if p, _ := e.Service.GetPolicy(e.AsAdmin(), dep.ID); p.State != iam.StateActive {
		t.Fatal("another instance deleted es-x's dependent authorization")
	}
	if err := e.Service.DeleteAuthorizationsCreatedBy(ctx, es); err != nil {
		t.Fatal(err)
	}
	if p, _ := e.Service.GetPolicy(e.AsAdmin(), dep.ID); p.State != iam.StateDeleted || p.LastModifiedByID != "crn-"+es.SourceCRN {
		t.Fatalf("dependent authorization after its source was deleted: %+v", p)
	}
	if p, _ := e.Service.GetPolicy(e.AsAdmin(), delegator.ID); p.State != iam.StateActive {
		t.Fatal("the user's own authorization was deleted too")
	}
	// A service cannot use the policy API to delete what it did not create.
	if err := e.Service.DeletePolicy(auth.WithPrincipal(ctx, es), delegator.ID); err == nil {
		t.Fatal("a service principal deleted a user's authorization")
	}
}

// Policies changed from many goroutines while others decide: afterwards the
// in-memory index agrees with the database (a fresh service decides the same).
func TestConcurrentPolicyChangesLeaveIndexConsistent(t *testing.T) {
	e := iamtest.New(t)
	u, _ := e.NewUser(t, "busy@example.com")
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 5 {
				key := kmsInstance(e, fmt.Sprintf("kp-%d", i))
				key.ResourceType, key.ResourceID = "key", fmt.Sprint(j)
				p, err := e.Service.CreatePolicy(e.AsAdmin(), iam.PolicyRequest{Type: iam.TypeAccess,
					Subjects:  []iam.PolicySubject{{Attributes: []iam.SubjectAttribute{{Name: "iam_id", Value: u.IAMID}}}},
					Roles:     []iam.PolicyRole{{RoleID: auth.RoleReader}},
					Resources: []iam.PolicyResource{{Attributes: iam.ResourceAttributes(key)}}})
				if err != nil {
					t.Error(err)
					return
				}
				if j%2 == 0 {
					if err := e.Service.DeletePolicy(e.AsAdmin(), p.ID); err != nil {
						t.Error(err)
					}
				}
			}
		}()
	}
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				e.Service.Authorize(ctx, u, auth.KMSKeyList, kmsInstance(e, "kp-0"))
			}
		}
	}()
	wg.Wait()
	close(stop)
	decide := func() []bool {
		var out []bool
		for i := range n {
			for j := range 5 {
				key := kmsInstance(e, fmt.Sprintf("kp-%d", i))
				key.ResourceType, key.ResourceID = "key", fmt.Sprint(j)
				out = append(out, e.Service.Authorize(ctx, u, auth.KMSKeyReadMetadata, key) == nil)
			}
		}
		return out
	}
	before := decide()
	for k, allowed := range before {
		if want := k%5%2 == 1; allowed != want {
			t.Fatalf("key %d of kp-%d: allowed=%v, want %v", k%5, k/5, allowed, want)
		}
	}
	page, err := e.Service.ListPolicies(e.AsAdmin(), iam.PolicyFilter{AccountID: e.Account.ID, IAMID: u.IAMID, Limit: 100})
	if err != nil || len(page.Policies) != 2*n {
		t.Fatalf("active policies: %d, %v; want %d", len(page.Policies), err, 2*n)
	}
	e.Reopen(t)
	if after := decide(); !slices.Equal(before, after) {
		t.Fatalf("decisions from the index %v differ from the database's %v", before, after)
	}
}
