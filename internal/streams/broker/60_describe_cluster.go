package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDescribeCluster names the cluster, its brokers and its controller
// (the leader), as Metadata does.
func (c *conn) handleDescribeCluster(_ context.Context, r *kmsg.DescribeClusterRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.DescribeClusterResponse)
	if !c.may(ClusterResource, "", Reader) {
		resp.ErrorCode = kerr.ClusterAuthorizationFailed.Code
		return resp, nil
	}
	if r.EndpointType > 1 { // 2 is the controllers' endpoint, which clients cannot reach
		resp.ErrorCode = kerr.UnsupportedEndpointType.Code
		return resp, nil
	}
	resp.EndpointType = r.EndpointType
	resp.ClusterID = c.b.cfg.ClusterID
	resp.ControllerID = c.b.leaderID()
	for _, a := range c.b.brokers() {
		resp.Brokers = append(resp.Brokers, kmsg.DescribeClusterResponseBroker{NodeID: a.NodeID, Host: a.Host, Port: a.Port})
	}
	return resp, nil
}
