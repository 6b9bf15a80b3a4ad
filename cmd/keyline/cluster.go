package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// newClusterCmd shows the nodes sharing the server's database.
func newClusterCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Show the Keyline nodes that share one PostgreSQL database"}
	cmd.AddCommand(&cobra.Command{
		Use:   "nodes",
		Short: "List the live nodes (heartbeat in the last 10 s) with their URL, seal state and leases (an account administrator's call)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nodes, err := c.client().ClusterNodes(ctxOf(cmd))
			if err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(map[string]any{"nodes": nodes})
			}
			rows := make([][]string, 0, len(nodes))
			for _, n := range nodes {
				id := n.ID
				if n.Self {
					id += " *"
				}
				leases := strings.Join(n.Leases, ",")
				if leases == "" {
					leases = "-"
				}
				rows = append(rows, []string{id, n.URL, fmt.Sprint(n.Sealed), fmt.Sprint(n.FeedTrusted),
					n.StartedAt.Format(time.RFC3339), n.HeartbeatAt.Format(time.RFC3339), leases})
			}
			c.table([]string{"Node", "URL", "Sealed", "Caches Current", "Started", "Last Heartbeat", "Leases"}, rows)
			return nil
		},
	})
	return cmd
}
