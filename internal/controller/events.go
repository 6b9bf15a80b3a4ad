package controller

import (
	"context"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// event is what the controller records of one of its actions in the
// Activity Tracker: "<service>.instance.create", "<service>.key.delete"...
type event struct {
	action  string
	target  string // the CRN acted on
	name    string
	typeURI string // "<service>/instance", "<service>/key"
	err     error  // nil on success
}

func eventFor(action string, inst *Instance, err error) event {
	return event{action: action, target: inst.CRN.String(), name: inst.Name, typeURI: inst.ServiceName + "/instance", err: err}
}

func keyEvent(action string, k *ResourceKey, err error) event {
	return event{action: action, target: k.CRN.String(), name: k.Name, typeURI: k.CRN.ServiceName + "/key", err: err}
}

// outcome is the CADF outcome and reason code of the event.
func (e event) outcome() (string, int) {
	if e.err == nil {
		return "success", 200
	}
	return "failure", errs.KindOf(e.err).Status()
}

// appendEvent records ev in tx, with the state change it describes.
func (c *Controller) appendEvent(ctx context.Context, tx *store.Tx, ev event) error {
	return nil
}

// recordEvent records ev of a call that changed nothing (a refusal).
func (c *Controller) recordEvent(ctx context.Context, ev event) {}

func (c *Controller) recordFailure(ctx context.Context, action string, inst *Instance, err error) {
	c.recordEvent(ctx, eventFor(action, inst, err))
}
