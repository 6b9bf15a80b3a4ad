package server

import (
	"context"

	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/streams"
	"github.com/keyline/keyline/internal/streams/objlog"
)

// messagehubBroker is the Event Streams side of messagehub instances in the
// resource controller.
type messagehubBroker struct {
	s     *streams.Service
	creds *credentials
}

func (b messagehubBroker) Provision(ctx context.Context, inst controller.Instance, params map[string]any) ([]string, error) {
	return b.s.Provision(ctx, streams.Instance{GUID: inst.GUID, CRN: inst.CRN.String(), AccountID: inst.AccountID, Name: inst.Name,
		Plan: inst.PlanID, Region: inst.Region, ResourceGroup: inst.ResourceGroupID}, params)
}

func (messagehubBroker) CheckParameters(params map[string]any) (map[string]any, error) {
	return streams.CheckParameters(params)
}

func (b messagehubBroker) Suspend(ctx context.Context, inst controller.Instance) error {
	return b.s.Suspend(ctx, inst.GUID)
}
func (b messagehubBroker) Resume(ctx context.Context, inst controller.Instance) error {
	return b.s.Resume(ctx, inst.GUID)
}
func (b messagehubBroker) Reclaim(ctx context.Context, inst controller.Instance) error {
	return b.s.Reclaim(ctx, inst.GUID)
}

func (b messagehubBroker) Credentials(ctx context.Context, inst controller.Instance, key controller.ResourceKey) (map[string]any, error) {
	return b.s.Credentials(ctx, inst.GUID, serviceIDName(key), key.Name, key.Role)
}

// RevokeCredentials deletes the resource key's service ID with its API key
// and access policy, then has the deployment's broker re-check its live
// Kafka connections at once, so that those the key opened are cut.
func (b messagehubBroker) RevokeCredentials(ctx context.Context, inst controller.Instance, key controller.ResourceKey) error {
	if err := b.creds.revoke(ctx, key); err != nil {
		return err
	}
	b.s.CredentialsRevoked(inst.GUID)
	return nil
}

// deploymentTasks lets deployments start tasks in the resource controller.
type deploymentTasks struct{ c *controller.Controller }

func (t deploymentTasks) Start(ctx context.Context, deploymentCRN, description string) (streams.Task, error) {
	c, err := crn.Parse(deploymentCRN)
	if err != nil {
		return nil, err
	}
	inst, err := t.c.LookupInstance(ctx, c.ServiceInstance)
	if err != nil {
		return nil, err
	}
	return t.c.Tasks().Start(ctx, *inst, "instance", description)
}

// deploymentStates lets deployments say why they are locked or unlocked.
type deploymentStates struct{ c *controller.Controller }

func (d deploymentStates) SetState(ctx context.Context, guid, state, reason string) error {
	switch state {
	case streams.StateActive:
		return d.c.SetActive(ctx, guid)
	case streams.StateInactive:
		return d.c.SetInactive(ctx, guid, reason)
	}
	return errs.Ef("server.SetState", errs.Internal, "BAD_STATE", "no such instance state %q", state)
}

// wireStreams builds Event Streams deployments on the KMS, IAM and the
// controller, and registers messagehub in the catalog.
func (s *Server) wireStreams(ctx context.Context, iamSvc *iam.Service, keys streams.KeyService, ctl *controller.Controller, restore streams.Restorer, feed *cluster.Feed) (*streams.Service, error) {
	objects, err := s.objectStore(ctx)
	if err != nil {
		return nil, err
	}
	svc, err := streams.New(ctx, streams.Config{
		DB: s.db, Audit: s.Audit, Clock: s.cfg.Clock, Logger: s.cfg.Logger,
		Keys: keys, Identity: streams.IAMIdentity(iamSvc),
		Tasks: deploymentTasks{ctl}, States: deploymentStates{ctl}, MasterKey: s.master,
		DataDir: s.cfg.DataDir, ListenHost: s.cfg.KafkaHost, AdvertisedHost: s.cfg.KafkaAdvertisedHost, Reauthorize: s.cfg.KafkaReauthorize, PortMin: s.cfg.KafkaPortMin, PortMax: s.cfg.KafkaPortMax,
		AdminURL: s.URL(), Restorer: restore, TLS: s.tls, LeasedEvents: true,
		MaxPreAuthConnections: s.cfg.KafkaMaxUnauthenticated, MaxPreAuthPerIP: s.cfg.KafkaMaxUnauthenticatedPerIP, LoginTimeout: s.cfg.KafkaLoginTimeout,
		FetchMemory: s.cfg.KafkaFetchMemory, DeploymentFetchMemory: s.cfg.KafkaDeploymentFetchMemory,
		RequestMemory: s.cfg.KafkaRequestMemory, DeploymentRequestMemory: s.cfg.KafkaDeploymentRequestMemory,
		ObjectStore: objects, ObjectLog: objlog.Options{FlushWindow: s.cfg.ObjectFlushWindow},
		Members: s.node.members, Feed: feed,
	})
	if err != nil {
		return nil, err
	}
	if err := ctl.Register(controller.EventStreams(), messagehubBroker{svc, &credentials{iamSvc}}); err != nil {
		return nil, err
	}
	// A deleted dependent (is -> kms) authorization is re-created while the
	// user's delegator authorization still allows it.
	iamSvc.OnAuthorizationDeleted(func(p iam.Policy) {
		if p.SubjectAttr("serviceName") == "is" {
			go svc.EnsureDependentAuthorizations(context.Background())
		}
	})
	s.mux.Handle("/messagehub/", svc.Handler())
	return svc, nil
}

// UpdateParameters accepts the parameters a live deployment can change
// (iam_token_only).
func (b messagehubBroker) UpdateParameters(ctx context.Context, inst controller.Instance, params map[string]any) error {
	return b.s.UpdateParameters(ctx, inst.GUID, params)
}
