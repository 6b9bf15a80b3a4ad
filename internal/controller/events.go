package controller

import (
	"context"
	"strings"

	"github.com/keyline/keyline/internal/audit"
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
	status  int    // the HTTP status of a success; failures take their error's
	err     error  // nil on success
}

func eventFor(action string, inst *Instance, err error) event {
	return event{action: action, target: inst.CRN.String(), name: inst.Name, typeURI: inst.ServiceName + "/instance", status: 200, err: err}
}

func keyEvent(action string, k *ResourceKey, err error) event {
	return event{action: action, target: k.CRN.String(), name: k.Name, typeURI: k.CRN.ServiceName + "/key", status: 200, err: err}
}

func (e event) withStatus(status int) event {
	e.status = status
	return e
}

// cadf builds the Activity Tracker event: the initiator and request come
// from ctx, the message names the service as the catalog displays it.
func (c *Controller) cadf(ctx context.Context, e event) *audit.Event {
	outcome, code := audit.Success, e.status
	if e.err != nil {
		outcome, code = audit.Failure, errs.KindOf(e.err).Status()
	}
	ev := audit.NewEvent(ctx, e.action, audit.Target{ID: e.target, Name: e.name, TypeURI: e.typeURI}, outcome, code)
	parts := strings.SplitN(e.action, ".", 3) // service, object, verb
	if len(parts) == 3 {
		display := parts[0]
		if entry, err := c.service("", parts[0]); err == nil {
			display = entry.svc.DisplayName
		}
		ev.Message = display + ": " + strings.ReplaceAll(parts[2], "_", " ") + " " + parts[1]
		if e.err != nil {
			ev.Message += " -failure"
		}
	}
	if e.err != nil {
		ev.Reason.ReasonForFailure = safeMessage(e.err)
	}
	return ev
}

// appendEvent records e in tx, with the state change it describes.
func (c *Controller) appendEvent(ctx context.Context, tx *store.Tx, e event) error {
	return c.audit.Append(tx, c.cadf(ctx, e))
}

// recordEvent records e of a call that changed nothing (a refusal).
func (c *Controller) recordEvent(ctx context.Context, e event) {
	if err := c.audit.Record(ctx, c.cadf(ctx, e)); err != nil {
		c.logger.Error("audit: could not record an event", "action", e.action, "err", err)
	}
}

func (c *Controller) recordFailure(ctx context.Context, action string, inst *Instance, err error) {
	c.recordEvent(ctx, eventFor(action, inst, err))
}
