package kpapi_test

import (
	"context"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"github.com/keyline/keyline/internal/kms"
)

// waitFor polls cond until it holds; the scheduler runs in its own goroutine.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestSchedulerRotatesOnPolicyAndPurgesAfter90Days(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	rotating := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "rotating", nil))
	must[*kp.Policy](t)(c.SetRotationPolicy(e.ctx, rotating.ID, 1))
	idle := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "no-policy", nil))
	doomed := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "doomed", nil))
	_, err := c.DeleteKey(e.ctx, doomed.ID, kp.ReturnMinimal)
	ok(t, err)
	exp := e.clock.Now().Add(45 * 24 * time.Hour)
	expiring := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "expiring", &exp))

	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() { e.svc.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	versions := func(id string) int {
		v, err := c.ListKeyVersions(e.ctx, id, &kp.ListKeyVersionsOptions{AllKeyStates: new(bool)})
		if err != nil {
			return -1
		}
		return len(v.KeyVersion)
	}
	waitFor(t, "the scheduler to sleep", func() bool { return e.clock.Sleepers() > 0 })
	if versions(rotating.ID) != 1 {
		t.Fatal("rotated before due")
	}
	// Advance a day at a time through 31 days: the key rotates once, at 30.
	for day := 1; day <= 31; day++ {
		waitFor(t, "the scheduler to sleep", func() bool { return e.clock.Sleepers() > 0 })
		e.clock.Advance(24 * time.Hour)
	}
	waitFor(t, "a scheduled rotation", func() bool { return versions(rotating.ID) == 2 })
	if versions(idle.ID) != 1 {
		t.Fatal("a key without a policy rotated")
	}
	md := must[*kp.Key](t)(c.GetKeyMetadata(e.ctx, rotating.ID))
	if md.LastRotateDate == nil || md.LastRotateDate.Sub(rotating.CreationDate.UTC()) < 30*24*time.Hour {
		t.Fatalf("rotated at %v, created %v", md.LastRotateDate, rotating.CreationDate)
	}
	for day := 0; day < 60; day++ {
		waitFor(t, "the scheduler to sleep", func() bool { return e.clock.Sleepers() > 0 })
		e.clock.Advance(24 * time.Hour)
	}
	waitFor(t, "the automatic purge", func() bool {
		_, err := c.GetKeyMetadata(e.ctx, doomed.ID)
		return kpStatus(err) == 404
	})
	waitFor(t, "the expired key's deactivation", func() bool {
		evs, _ := auditEvents(e)
		for _, ev := range evs {
			if ev.Action == "kms.secrets.expire" && ev.Outcome == "success" && ev.Initiator == "crn-kms-scheduler" {
				return true
			}
		}
		return false
	})
	if k := must[*kp.Key](t)(c.GetKeyMetadata(e.ctx, expiring.ID)); k.State != kms.StateDeactivated {
		t.Fatalf("expired key state = %d", k.State)
	}
	if n := versions(rotating.ID); n != 4 {
		t.Fatalf("after 91 days a monthly policy gave %d versions, want 4", n)
	}
}
