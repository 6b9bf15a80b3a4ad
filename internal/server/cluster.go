package server

import (
	"context"
	"net/http"
	"sync/atomic"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
)

// node is this process as one node of a cluster sharing a PostgreSQL
// database (or the only node, on SQLite): its id, its heartbeats in
// cluster_nodes, and, while unsealed, the change feed its services follow.
type node struct {
	id      string
	members *cluster.Membership
	feed    atomic.Pointer[cluster.Feed] // nil while sealed
	cancel  context.CancelFunc
}

// newNode names this node; its heartbeats start with joinCluster.
func (s *Server) newNode() error {
	id, err := cluster.NodeID(s.cfg.DataDir, s.cfg.NodeID)
	if err != nil {
		return err
	}
	s.node = &node{id: id, cancel: func() {}}
	return nil
}

// joinCluster records this node and starts its heartbeats (after the seal
// is open: the heartbeat says whether it is sealed).
func (s *Server) joinCluster(ctx context.Context) error {
	n := s.node
	if n.members != nil {
		// Joined by wire (a dev seal opens before New returns): record
		// the seal state now rather than at the next heartbeat.
		return n.members.Beat(ctx)
	}
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	sealed := func() bool { return s.live.Load() == nil }
	members, err := cluster.Join(bg, s.db, n.id, s.URL(), sealed, func() bool { return n.feed.Load().Trusted() }, s.cfg.Logger)
	if err != nil {
		cancel()
		return err
	}
	n.members, n.cancel = members, cancel
	return nil
}

// leaveCluster stops the heartbeats; the node drops off the live list.
func (s *Server) leaveCluster() {
	if s.node != nil {
		s.node.cancel()
	}
}

// followChanges subscribes the services' caches to the change feed and
// starts it; feed was created before the services loaded those caches.
func (s *Server) followChanges(ctx context.Context, feed *cluster.Feed) {
	s.svc.iam.JoinCluster(ctx, feed)
	s.svc.kms.JoinCluster(ctx, feed)
	s.Audit.JoinCluster(feed)
	s.followKeyring(ctx, feed)
	feed.Start(ctx)
	s.node.feed.Store(feed)
}

// NodeID is this node's id (--node-id, or the one kept in the data
// directory).
func (s *Server) NodeID() string {
	if s.node == nil {
		return ""
	}
	return s.node.id
}

// withClusterHealth answers GET /healthz with 503 while the node is
// unsealed but cannot read the change feed (its caches are not trusted and
// every call goes to the database), so a load balancer sends calls to
// nodes that can.
func (s *Server) withClusterHealth(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" && s.live.Load() != nil {
			if f := s.node.feed.Load(); f != nil && !f.Trusted() {
				http.Error(w, "the change feed cannot be read: caches are not trusted", http.StatusServiceUnavailable)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// NodeList is GET /v1/cluster/nodes.
type NodeList struct {
	Nodes []cluster.Node `json:"nodes"`
}

// clusterNodes lists the live nodes: an account administrator's call, as
// the seal API is.
func (s *Server) clusterNodes(w http.ResponseWriter, r *http.Request) {
	svc := s.svc
	if svc == nil || s.node.members == nil {
		writeSysError(w, errs.E("cluster.nodes", errs.Unavailable, "SEALED", "Keyline is sealed"))
		return
	}
	ctx, p, err := httpapi.Authenticate(r, svc.iam)
	if err != nil {
		writeSysError(w, err)
		return
	}
	const action = "keyline.cluster.nodes.read"
	target := audit.Target{ID: "crn:v1:bluemix:public:keyline:global:a/" + p.AccountID + "::", TypeURI: "keyline/cluster"}
	if err := svc.iam.Authorize(ctx, p, auth.PolicyRead, auth.Resource{AccountID: p.AccountID, ServiceName: "keyline"}); err != nil {
		s.Audit.Denied(ctx, action, target, err)
		writeSysError(w, err)
		return
	}
	nodes, err := s.node.members.Live(ctx)
	if err != nil {
		writeSysError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, NodeList{Nodes: nodes})
}
