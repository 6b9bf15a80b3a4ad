package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleFindCoordinator points every group and every transactional id at
// this broker: it is their coordinator.
func (c *conn) handleFindCoordinator(_ context.Context, r *kmsg.FindCoordinatorRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.FindCoordinatorResponse)
	var code int16
	switch {
	case !c.access().Allows(Reader):
		code = kerr.GroupAuthorizationFailed.Code
	case r.CoordinatorType > 1: // 0 group, 1 transaction, 2 share
		code = kerr.CoordinatorNotAvailable.Code
	}
	node, host, port := c.b.cfg.NodeID, c.b.cfg.AdvertisedHost, c.b.cfg.AdvertisedPort
	if code != 0 {
		node, host, port = -1, "", -1
	}
	if r.Version < 4 {
		resp.ErrorCode, resp.NodeID, resp.Host, resp.Port = code, node, host, port
		return resp, nil
	}
	for _, key := range r.CoordinatorKeys {
		rc := kmsg.NewFindCoordinatorResponseCoordinator()
		rc.Key, rc.ErrorCode, rc.NodeID, rc.Host, rc.Port = key, code, node, host, port
		resp.Coordinators = append(resp.Coordinators, rc)
	}
	return resp, nil
}
