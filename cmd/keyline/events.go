package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/keyline/keyline/internal/client"
	"github.com/spf13/cobra"
)

func newEventsCmd(c *cli) *cobra.Command {
	var action, target, outcome, since string
	var follow bool
	var limit int
	cmd := &cobra.Command{
		Use: "events [--follow] [--action A] [--target CRN] [--outcome success|failure]", Short: "Activity Tracker events, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"action": action, "target": target, "outcome": outcome, "from": since} {
				if v != "" {
					q.Set(k, v)
				}
			}
			cl := c.client()
			if follow {
				q.Set("follow", "true")
				body, err := cl.Stream(ctxOf(cmd), client.Request{Method: "GET", Path: "/v1/audit/events?" + q.Encode()})
				if err != nil {
					return err
				}
				defer body.Close()
				sc := bufio.NewScanner(body)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for sc.Scan() {
					if c.output == "json" {
						fmt.Fprintln(c.out, sc.Text())
						continue
					}
					var ev map[string]any
					if json.Unmarshal(sc.Bytes(), &ev) == nil {
						c.eventLine(ev)
					}
				}
				if ctxOf(cmd).Err() != nil {
					return nil
				}
				return sc.Err()
			}
			if limit > 0 {
				q.Set("limit", fmt.Sprint(limit))
			}
			var out map[string]any
			if err := cl.Do(ctxOf(cmd), clientReq("GET", "/v1/audit/events?"+q.Encode(), nil), &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			var rows [][]string
			for _, ev := range list(out, "events") {
				rows = append(rows, []string{str(ev, "eventTime"), str(ev, "severity"), str(ev, "action"), str(ev, "outcome"), str(obj(ev, "initiator"), "id"), str(obj(ev, "target"), "id")})
			}
			c.table([]string{"Time", "Severity", "Action", "Outcome", "Initiator", "Target"}, rows)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing new events")
	cmd.Flags().StringVar(&action, "action", "", "action, or a prefix ending in * (kms.secrets.*)")
	cmd.Flags().StringVar(&target, "target", "", "target CRN")
	cmd.Flags().StringVar(&outcome, "outcome", "", "success or failure")
	cmd.Flags().StringVar(&since, "since", "", "RFC 3339 time")
	cmd.Flags().IntVar(&limit, "limit", 0, "events per page (default 50)")
	return cmd
}

func (c *cli) eventLine(ev map[string]any) {
	line := fmt.Sprintf("%s  %-8s  %-34s  %-7s  %s", str(ev, "eventTime"), str(ev, "severity"), str(ev, "action"), str(ev, "outcome"), str(obj(ev, "target"), "id"))
	if r := str(obj(ev, "reason"), "reasonForFailure"); r != "" {
		line += "  (" + r + ")"
	}
	fmt.Fprintln(c.out, line)
}
