package controller

import (
	"context"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
)

// ServiceBroker is a service's side of the instances the controller keeps:
// the controller owns the instance record, its lifecycle and reclamation; the
// broker builds, pauses, resumes and erases what the instance is (a Key
// Protect instance, an Event Streams deployment). Brokers must tolerate a
// call being repeated: Reclaim in particular is retried until it succeeds,
// and runs again if the process stops between the broker's success and the
// controller recording it.
type ServiceBroker interface {
	// Provision creates the service's side of a new instance; params are the request's parameters.
	// It may return warnings to show the user. An error (errs kinds) fails the create with that error.
	Provision(ctx context.Context, inst Instance, params map[string]any) (warnings []string, err error)
	Suspend(ctx context.Context, inst Instance) error // deleted: now pending reclamation
	Resume(ctx context.Context, inst Instance) error  // restored from reclamation
	Reclaim(ctx context.Context, inst Instance) error // reclamation ended or reclaimed: erase for good
	// Credentials returns the credentials of a new resource key. They are shown
	// once, in the create response, and never stored by the controller.
	Credentials(ctx context.Context, inst Instance, key ResourceKey) (map[string]any, error)
}

// CredentialRevoker is implemented by brokers whose credentials must be
// revoked when their resource key is deleted (an API key of a service ID).
type CredentialRevoker interface {
	RevokeCredentials(ctx context.Context, inst Instance, key ResourceKey) error
}

// ParameterChecker is implemented by brokers that validate a create
// request's parameters before anything is stored: it returns them under
// their canonical names, or an error (errs kinds) that refuses the request.
type ParameterChecker interface {
	CheckParameters(params map[string]any) (map[string]any, error)
}

// ParameterUpdater is implemented by brokers that accept new parameters on an
// existing instance (PATCH with parameters). Brokers without it refuse them.
type ParameterUpdater interface {
	UpdateParameters(ctx context.Context, inst Instance, params map[string]any) error
}

// CatalogService is a service offered in the catalog: what a create request
// can name by plan and target.
type CatalogService struct {
	Name        string // CRN service name and IAM service name: "kms", "messagehub"
	ID          string // global catalog id, shown as resource_id
	DisplayName string // "Key Protect"; also the prefix of audit messages
	Plans       []Plan
	Regions     []string
	// ReclamationWindow is how long a deleted instance waits in
	// pending_reclamation before it is reclaimed; 0 means DefaultReclamationWindow.
	ReclamationWindow time.Duration
	// DefaultKeyRole is the role of resource keys created without one (a
	// role CRN); "" means Reader, the least that can use an instance.
	DefaultKeyRole string
}

// Plan is a service plan.
type Plan struct {
	ID   string // resource_plan_id
	Name string
}

// DefaultReclamationWindow is the soft-deletion period the seed gives Cloud
// Databases and Event Streams deployments ("up to 9 days").
const DefaultReclamationWindow = 9 * 24 * time.Hour

// Regions are the multizone regions Keyline offers its services in.
var defaultRegions = []string{"us-south", "us-east", "eu-de", "eu-gb", "jp-tok", "au-syd", "ca-tor"}

// KeyProtect is the catalog entry of the key management service.
func KeyProtect() CatalogService {
	return CatalogService{Name: "kms", ID: "ee41347f-b18e-4ca6-bf80-b5467c63f9a6", DisplayName: "Key Protect",
		Plans:          []Plan{{ID: "eedd3585-90c6-4c8f-be3d-062069e99fc3", Name: "tiered-pricing"}},
		Regions:        append([]string(nil), defaultRegions...),
		DefaultKeyRole: auth.RoleManager}
}

// EventStreams is the catalog entry of Event Streams deployments: the
// Standard plan and the Enterprise plan (a larger cluster's limits; see
// streams.PlanLimits).
func EventStreams() CatalogService {
	return CatalogService{Name: "messagehub", ID: "dff97f5c-bc5e-4455-b470-411c3edbe49c", DisplayName: "Event Streams",
		Plans:          []Plan{{ID: "eventstreams-gen2-standard", Name: "standard"}, {ID: "eventstreams-gen2-enterprise", Name: "enterprise"}},
		Regions:        append([]string(nil), defaultRegions...),
		DefaultKeyRole: auth.RoleManager}
}

type catalogEntry struct {
	svc    CatalogService
	broker ServiceBroker
}

func (s CatalogService) validate() error {
	const op = "controller.Register"
	switch {
	case s.Name == "" || !isServiceName(s.Name):
		return errs.E(op, errs.Invalid, "BAD_CATALOG", "a catalog service needs a lowercase CRN service name")
	case s.ID == "" || s.DisplayName == "":
		return errs.Ef(op, errs.Invalid, "BAD_CATALOG", "catalog service %s needs an id and a display name", s.Name)
	case len(s.Plans) == 0 || len(s.Regions) == 0:
		return errs.Ef(op, errs.Invalid, "BAD_CATALOG", "catalog service %s needs at least one plan and one region", s.Name)
	case s.DefaultKeyRole != "" && auth.RoleCRN(s.DefaultKeyRole) != s.DefaultKeyRole:
		return errs.Ef(op, errs.Invalid, "BAD_CATALOG", "catalog service %s has a default key role that is not a role CRN", s.Name)
	case s.ReclamationWindow < 0:
		return errs.Ef(op, errs.Invalid, "BAD_CATALOG", "catalog service %s has a negative reclamation window", s.Name)
	}
	for _, p := range s.Plans {
		if p.ID == "" || p.Name == "" {
			return errs.Ef(op, errs.Invalid, "BAD_CATALOG", "a plan of %s needs an id and a name", s.Name)
		}
	}
	return nil
}

func (s CatalogService) window() time.Duration {
	if s.ReclamationWindow == 0 {
		return DefaultReclamationWindow
	}
	return s.ReclamationWindow
}

func (s CatalogService) plan(id string) (Plan, bool) {
	for _, p := range s.Plans {
		if p.ID == id {
			return p, true
		}
	}
	return Plan{}, false
}

// region maps a create request's target to one of the service's regions.
// IBM accepts the plain region and the deployment-style names of its
// public environment: "blue-us-south", "bluemix-us-south".
func (s CatalogService) region(target string) (string, bool) {
	t := strings.ToLower(strings.TrimSpace(target))
	for _, prefix := range []string{"", "blue-", "bluemix-", "ibm-"} {
		r, ok := strings.CutPrefix(t, prefix)
		if !ok {
			continue
		}
		for _, known := range s.Regions {
			if r == known {
				return known, true
			}
		}
	}
	return "", false
}

// findPlan looks a plan up by id, then by name, across the catalog or, when
// service (a service name or catalog id) is given, within that service.
func findPlan(entries []*catalogEntry, service, idOrName string) (*catalogEntry, Plan, error) {
	const op = "controller.CreateInstance"
	if service != "" {
		var named []*catalogEntry
		for _, e := range entries {
			if e.svc.Name == service || e.svc.ID == service {
				named = append(named, e)
			}
		}
		if len(named) == 0 {
			return nil, Plan{}, errs.Ef(op, errs.Invalid, "INVALID_SERVICE", "The service %q is not in the catalog", service).On("field", "resource_id")
		}
		entries = named
	}
	for _, e := range entries {
		if p, ok := e.svc.plan(idOrName); ok {
			return e, p, nil
		}
	}
	var found *catalogEntry
	var plan Plan
	for _, e := range entries {
		for _, p := range e.svc.Plans {
			if p.Name == idOrName {
				if found != nil {
					return nil, Plan{}, errs.Ef(op, errs.Invalid, "AMBIGUOUS_PLAN", "The plan name %q is offered by more than one service; use its resource_plan_id", idOrName).On("field", "resource_plan_id")
				}
				found, plan = e, p
			}
		}
	}
	if found == nil && service != "" {
		return nil, Plan{}, errs.Ef(op, errs.Invalid, "INVALID_PLAN", "The resource plan %q is not a plan of %s", idOrName, entries[0].svc.DisplayName).On("field", "resource_plan_id")
	}
	if found == nil {
		return nil, Plan{}, errs.Ef(op, errs.Invalid, "INVALID_PLAN", "The resource plan %q does not exist in the catalog", idOrName).On("field", "resource_plan_id")
	}
	return found, plan, nil
}

func isServiceName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}
