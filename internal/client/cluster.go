package client

import (
	"context"
	"time"
)

// ClusterNode is one live node of GET /v1/cluster/nodes.
type ClusterNode struct {
	ID          string    `json:"id"`
	URL         string    `json:"url"`
	StartedAt   time.Time `json:"started_at"`
	HeartbeatAt time.Time `json:"heartbeat_at"`
	Sealed      bool      `json:"sealed"`
	FeedTrusted bool      `json:"feed_trusted"`
	Self        bool      `json:"self"` // the node that answered
	// Leases are the cluster leases the node holds ("schedulers": it runs
	// the cluster's background work).
	Leases []string `json:"leases"`
}

// ClusterNodes lists the nodes sharing the server's database (an account
// administrator's call).
func (c *Client) ClusterNodes(ctx context.Context) ([]ClusterNode, error) {
	var out struct {
		Nodes []ClusterNode `json:"nodes"`
	}
	err := c.Do(ctx, Request{Method: "GET", Path: "/v1/cluster/nodes"}, &out)
	return out.Nodes, sysError(err, &SealStatus{})
}
