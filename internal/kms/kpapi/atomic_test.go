package kpapi_test

import (
	"context"
	"errors"
	"testing"

	kp "github.com/IBM/keyprotect-go-client"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// failingAudit fails to append events of one action, as a crash between
// the state change and its event would.
type failingAudit struct {
	kms.Auditor
	action string
}

func (f failingAudit) Append(ctx context.Context, tx *store.Tx, ev kms.AuditEvent) error {
	if ev.Action == f.action {
		return errors.New("disk full")
	}
	return f.Auditor.Append(ctx, tx, ev)
}

// TestStateChangesAreAllOrNothing: when a change's audit event cannot be
// written, nothing of the change remains: no new version, no state change,
// no lifecycle event.
func TestStateChangesAreAllOrNothing(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "atomic", nil))
	no := false
	must[kms.Registration](t)(e.svc.CreateRegistration(asService(), instance, key.ID,
		"crn:v1:bluemix:public:messagehub:us-south:a/"+account+":dep-0001::", kms.RegistrationInput{PreventKeyDeletion: &no}))
	master, _ := seal.New(seal.RandomKey())
	for _, action := range []string{"kms.secrets.rotate", "kms.secrets.disable", "kms.secrets.delete"} {
		t.Run(action, func(t *testing.T) {
			broken, err := kms.New(e.ctx, kms.Config{DB: e.db, Master: master, Clock: e.clock, Authorizer: e.authz,
				Audit: failingAudit{kms.ActivityTracker(e.audit), action}})
			ok(t, err)
			ctx := asUser("IBMid-manager")
			switch action {
			case "kms.secrets.rotate":
				err = broken.Rotate(ctx, instance, key.ID, kms.RotateInput{})
			case "kms.secrets.disable":
				err = broken.DisableKey(ctx, instance, key.ID)
			default:
				_, err = broken.DeleteKey(ctx, instance, key.ID, true)
			}
			if err == nil {
				t.Fatal("the change succeeded without its audit event")
			}
			after := must[*kp.Key](t)(c.GetKeyMetadata(e.ctx, key.ID))
			if after.State != kms.StateActive || after.KeyVersion.ID != key.KeyVersion.ID || after.LastRotateDate != nil {
				t.Fatalf("a half-done change remains: %+v", after)
			}
			if evs := must[[]kms.KeyEvent](t)(e.svc.PendingEvents(e.ctx, "messagehub")); len(evs) != 0 {
				t.Fatalf("a lifecycle event outlived its change: %+v", evs)
			}
		})
	}
}
