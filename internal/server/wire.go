package server

import (
	"context"
	"net/http"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/backup"
	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/console"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/controller/rcapi"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/iam/iamapi"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/kms/kpapi"
	"github.com/keyline/keyline/internal/streams"
)

// services are the parts of a running Keyline.
type services struct {
	iam        *iam.Service
	kms        *kms.Service
	controller *controller.Controller
	streams    *streams.Service
	backups    *backup.Service
	account    string // the first account: a node's own audit events name it

	cancel context.CancelFunc
	done   []chan struct{}
}

// wire builds the services on the shared store, registers their routes and
// starts their schedulers.
func (s *Server) wire(ctx context.Context) error {
	cfg := s.cfg
	// The schedulers' lease and the owners of tasks are the node's.
	if err := s.joinCluster(ctx); err != nil {
		return err
	}
	// The change feed is positioned before the services load their caches
	// (see cluster.NewFeed).
	feed, err := cluster.NewFeed(ctx, s.db, cfg.Logger)
	if err != nil {
		return err
	}
	iamSvc, err := iam.New(ctx, iam.Config{DB: s.db, Master: s.master, Clock: cfg.Clock, Logger: cfg.Logger, Audit: s.Audit})
	if err != nil {
		return err
	}
	account, key, created, err := iamSvc.Bootstrap(ctx, cfg.AdminAPIKey)
	if err != nil {
		return err
	}
	if created && cfg.AdminAPIKey == "" {
		if err := writeAdminKey(cfg.DataDir, key); err != nil {
			return err
		}
		s.AdminAPIKey = key
	}
	kmsSvc, err := kms.New(ctx, kms.Config{DB: s.db, Master: s.master, Clock: cfg.Clock, Authorizer: iamSvc, Audit: kms.ActivityTracker(s.Audit), Logger: cfg.Logger})
	if err != nil {
		return err
	}
	ctl, err := controller.New(ctx, controller.Config{DB: s.db, Audit: s.Audit, Clock: cfg.Clock, Authorizer: iamSvc, Logger: cfg.Logger, Sealer: s.master,
		Node: s.node.members})
	if err != nil {
		return err
	}
	creds := &credentials{iam: iamSvc}
	if err := ctl.Register(controller.KeyProtect(), &kmsBroker{kms: kmsSvc, creds: creds}); err != nil {
		return err
	}
	s.svc = &services{iam: iamSvc, kms: kmsSvc, controller: ctl, account: account.ID}
	keys := streams.KMSKeys(kmsSvc)
	restore := &restorer{}
	if s.svc.streams, err = s.wireStreams(ctx, iamSvc, keys, ctl, restore, feed); err != nil {
		return err
	}
	if s.svc.backups, err = s.wireBackups(ctx, iamSvc, keys, ctl, s.svc.streams, restore); err != nil {
		return err
	}

	iamapi.New(iamSvc, cfg.Logger).Register(s.mux)
	kpapi.New(kmsSvc, iamSvc, cfg.Logger).Register(s.mux)
	rcapi.New(ctl, iamSvc, cfg.Logger).Register(s.mux)
	(&audit.API{Log: s.Audit, Authn: iamSvc, Authz: iamSvc}).Register(s.mux)

	// The web console calls the APIs above in process, as the signed-in user.
	con, err := console.New(console.Config{API: s.mux, Authn: iamSvc, Authz: iamSvc, Secure: s.tls != nil, Logger: cfg.Logger, Clock: cfg.Clock,
		DB: s.db, Sealer: s.master})
	if err != nil {
		return err
	}
	con.Register(s.mux)
	s.mux.HandleFunc("GET /v1/cluster/nodes", s.clusterNodes)

	bg, cancel := context.WithCancel(context.Background())
	s.svc.cancel = cancel
	s.followChanges(bg, feed)
	// A master key rotation runs on the node it was started through (and
	// resumes on any node that starts while it is recorded as running):
	// its writes are conditional, so nodes walking at once converge.
	s.svc.run(bg, s.runMasterRotation)
	// Deployments start last: they unwrap their keys through the KMS and
	// IAM, and a deployment whose key is unusable stays locked, saying why.
	if err := s.svc.streams.Start(ctx); err != nil {
		return err
	}
	// One node of the cluster runs the schedulers, under a lease (every
	// write they make checks it); on SQLite this node always holds it.
	// They start once the deployments are loaded: key events and task
	// takeovers act on them.
	schedulers := s.node.members.Lease(cluster.SchedulersLease)
	s.svc.run(bg, func(ctx context.Context) error {
		schedulers.Run(ctx, kmsSvc.Run, ctl.Run, ctl.RunTakeovers, s.svc.backups.Run, s.svc.streams.RunEvents)
		return nil
	})
	return nil
}

// run starts each background loop; stop waits for them.
func (v *services) run(ctx context.Context, loops ...func(context.Context) error) {
	for _, loop := range loops {
		done := make(chan struct{})
		v.done = append(v.done, done)
		go func() {
			defer close(done)
			loop(ctx)
		}()
	}
}

// handler is every route behind the shared HTTP edge.
func (s *Server) handler() http.Handler {
	return httpapi.Middleware(s.cfg.Logger, s.withClusterHealth(http.HandlerFunc(s.route)))
}

// stop ends the services' background work.
func (s *Server) stop() {
	if s.svc == nil {
		return
	}
	if s.svc.backups != nil {
		// Running backups read the deployments' logs: they stop first.
		s.svc.backups.Close()
	}
	if s.svc.streams != nil {
		s.svc.streams.Close()
	}
	if s.svc.cancel != nil {
		s.svc.cancel()
	}
	for _, d := range s.svc.done {
		<-d
	}
}
