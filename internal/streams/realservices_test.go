package streams_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/iam/iamtest"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/server"
	"github.com/keyline/keyline/internal/streams"
)

func TestSeedFlowsOverRealKMSAndIAM(t *testing.T) {
	env := iamtest.New(t)
	ctx := context.Background()
	account := env.Account.ID
	k, err := kms.New(ctx, kms.Config{DB: env.DB, Master: env.Master, Clock: env.Clock, Authorizer: env.Service, Audit: kms.ActivityTracker(env.Audit)})
	if err != nil {
		t.Fatal(err)
	}
	kpGUID := uuid.NewString()
	if err := k.CreateInstance(ctx, kms.Instance{GUID: kpGUID, AccountID: account, Region: "us-south"}); err != nil {
		t.Fatal(err)
	}
	key, err := k.CreateKey(env.AsAdmin(), kpGUID, kms.CreateKeyInput{Name: "streams-root"})
	if err != nil {
		t.Fatal(err)
	}
	tasks, states := &streams.TestTasks{}, &streams.TestStates{}
	svc := streams.StartService(t, streams.Config{DB: env.DB, Audit: env.Audit, Keys: server.KMSKeys(k), Identity: server.IAMIdentity(env.Service),
		Tasks: tasks, States: states, MasterKey: streams.MustSeal(t), DataDir: filepath.Join(t.TempDir(), "data"), SegmentBytes: 16 << 10})

	guid := uuid.NewString()
	inst := streams.Instance{GUID: guid, CRN: crn.New(streams.ServiceName, "us-south", account, guid).String(), AccountID: account,
		Name: "orders", Plan: "standard", Region: "us-south"}
	params := map[string]any{streams.ParamDiskKey: key.CRN}
	_, err = svc.Provision(env.AsAdmin(), inst, params)
	if e := errs.As(err); e == nil || e.Kind != errs.Invalid || !strings.HasPrefix(e.Msg, "Missing or mis-configured S2S Authorization Policy. The service could not configure access to the encryption key specified as "+key.CRN) {
		t.Fatalf("provision without the authorization: %v", err)
	}
	kpResource := auth.Resource{AccountID: account, ServiceName: "kms", ServiceInstance: kpGUID}
	env.Authorize(t, streams.ServiceName, "", kpResource, auth.RoleReader)
	if _, err := svc.Provision(env.AsAdmin(), inst, params); err != nil {
		t.Fatal(err)
	}
	regs, err := k.ListRegistrations(env.AsAdmin(), kpGUID, key.ID, kms.RegistrationQuery{})
	if err != nil {
		t.Fatal(err)
	}
	if len(regs.Registrations) != 1 || regs.Registrations[0].ResourceCRN != inst.CRN {
		t.Fatalf("registrations %+v: want the deployment", regs)
	}

	creds := func(role string, opts ...kgo.Opt) *kgo.Client {
		c := streams.RealCredentials(t, env, svc, inst, "creds-"+uuid.NewString()[:8], role)
		return streams.NewClient(t, c["kafka_brokers_sasl"].([]string), "token", c["api_key"].(string), opts...)
	}
	streams.CreateTopic(t, creds(auth.RoleManager), "orders", 1)
	streams.ProduceN(t, creds(auth.RoleWriter), "orders", "o", 500)

	// Rotate: the event is acknowledged once the DEK is rewrapped, and the
	// data is re-encrypted under a fresh DEK.
	if err := k.Rotate(env.AsAdmin(), kpGUID, key.ID, kms.RotateInput{}); err != nil {
		t.Fatal(err)
	}
	streams.Eventually(t, "the rotation is acknowledged and the data re-encrypted", func() bool {
		evs, _ := k.PendingEvents(ctx, streams.ServiceName)
		return len(evs) == 0 && tasks.FirstCompleted()
	})
	meta, err := k.GetKeyMetadata(env.AsAdmin(), kpGUID, key.ID)
	if err != nil {
		t.Fatal(err)
	}
	regs, _ = k.ListRegistrations(env.AsAdmin(), kpGUID, key.ID, kms.RegistrationQuery{})
	if regs.Registrations[0].KeyVersion.ID != meta.KeyVersion.ID {
		t.Fatalf("registration version %s, key version %s", regs.Registrations[0].KeyVersion.ID, meta.KeyVersion.ID)
	}
	if got := streams.ConsumeAll(t, creds(auth.RoleReader, kgo.ConsumeTopics("orders")), 500); len(got) != 500 {
		t.Fatalf("consumed %d after rotation", len(got))
	}

	// Cryptoshredding: deleting the key needs force while registered, and
	// locks the deployment at once.
	if _, err := k.DeleteKey(env.AsAdmin(), kpGUID, key.ID, false); errs.KindOf(err) != errs.Conflict {
		t.Fatalf("delete without force of a key in use: %v, want 409", err)
	}
	if _, err := k.DeleteKey(env.AsAdmin(), kpGUID, key.ID, true); err != nil {
		t.Fatal(err)
	}
	streams.Eventually(t, "the deployment locks", func() bool {
		info, _ := svc.Deployment(ctx, guid)
		return info.State == streams.StateInactive && strings.Contains(info.Reason, "was deleted")
	})
	if err := creds(auth.RoleReader).Ping(streams.TestCtx(t)); err == nil || !strings.Contains(err.Error(), "was deleted") {
		t.Fatalf("login after the key was deleted: %v", err)
	}

	// Both services' events are in the one Activity Tracker.
	for _, action := range []string{"kms.secrets.delete", "kms.secrets.ack-delete", streams.ActionStorageKeyRead, "kms.secrets.ack-rotate", streams.ActionStorageKeyUpdate} {
		streams.Eventually(t, action+" is recorded", func() bool {
			page, err := env.Audit.Query(ctx, audit.Filter{AccountID: account, Action: action})
			return err == nil && len(page.Events) > 0
		})
	}

	// Restore within 30 days unlocks with all data.
	env.Clock.Advance(time.Minute)
	if _, err := k.RestoreKey(env.AsAdmin(), kpGUID, key.ID); err != nil {
		t.Fatal(err)
	}
	streams.Eventually(t, "the deployment unlocks", func() bool {
		info, _ := svc.Deployment(ctx, guid)
		return info.State == streams.StateActive
	})
	if got := streams.ConsumeAll(t, creds(auth.RoleReader, kgo.ConsumeTopics("orders")), 500); len(got) != 500 {
		t.Fatalf("consumed %d after restore", len(got))
	}

	// A backup key needs the delegator role; with it, the deployment
	// creates the block storage authorization itself.
	backup, err := k.CreateKey(env.AsAdmin(), kpGUID, kms.CreateKeyInput{Name: "backups"})
	if err != nil {
		t.Fatal(err)
	}
	second := streams.NewInstance()
	second.AccountID = account
	second.CRN = crn.New(streams.ServiceName, "us-south", account, second.GUID).String()
	bparams := map[string]any{streams.ParamDiskKey: key.CRN, streams.ParamBackupKey: backup.CRN}
	if _, err := svc.Provision(env.AsAdmin(), second, bparams); errs.As(err) == nil || errs.As(err).Code != "S2S_DELEGATION_MISSING" {
		t.Fatalf("backup key without delegation: %v", err)
	}
	env.Authorize(t, streams.ServiceName, "", kpResource, auth.RoleReader, auth.RoleAuthorizationDelegator)
	if _, err := svc.Provision(env.AsAdmin(), second, bparams); err != nil {
		t.Fatal(err)
	}
	pols, err := env.Service.ListAuthorizations(env.AsAdmin(), account, iam.PolicyFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var dependent []iam.Policy
	for _, p := range pols {
		if p.SubjectAttr("serviceName") == "is" {
			dependent = append(dependent, p)
		}
	}
	if len(dependent) != 1 || dependent[0].CreatedByID != "crn-"+second.CRN || !dependent[0].HasRole(auth.RoleReader) {
		t.Fatalf("dependent authorizations %+v: want is -> kms Reader created by the deployment", dependent)
	}

	// Deleting the block storage authorization: the deployment re-creates
	// it, as long as the delegation is still granted.
	env.Service.OnAuthorizationDeleted(func(p iam.Policy) {
		if p.SubjectAttr("serviceName") == "is" {
			svc.EnsureDependentAuthorizations(context.Background())
		}
	})
	if err := env.Service.DeleteAuthorization(env.AsAdmin(), dependent[0].ID); err != nil {
		t.Fatal(err)
	}
	streams.Eventually(t, "the block storage authorization is re-created", func() bool {
		pols, _ := env.Service.ListAuthorizations(env.AsAdmin(), account, iam.PolicyFilter{})
		for _, p := range pols {
			if p.SubjectAttr("serviceName") == "is" && p.ID != dependent[0].ID && p.CreatedByID == "crn-"+second.CRN {
				return true
			}
		}
		return false
	})
}
