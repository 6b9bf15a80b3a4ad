package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/spf13/cobra"
)

func newEventsCmd(c *cli) *cobra.Command {
	var action, target, outcome, since string
	var follow bool
	var limit, tail int
	cmd := &cobra.Command{
		Use: "events [--follow [--tail N]] [--since 1h|TIME] [--action A] [--target CRN] [--outcome success|failure]", Short: "Activity Tracker events, newest first; --follow prints the last few, then new ones as they happen", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			from, err := sinceTime(since, time.Now())
			if err != nil {
				return err
			}
			q := url.Values{}
			for k, v := range map[string]string{"action": action, "target": target, "outcome": outcome, "from": from} {
				if v != "" {
					q.Set(k, v)
				}
			}
			cl := c.client()
			if follow {
				if tail < 0 || tail > 500 {
					return usageError{errorf("--tail must be between 0 and 500")}
				}
				// Subscribe first, then read the last events: nothing that
				// happens in between is lost (a duplicate is skipped).
				fq := url.Values{}
				for k, v := range q {
					fq[k] = v
				}
				fq.Set("follow", "true")
				body, err := cl.Stream(ctxOf(cmd), client.Request{Method: "GET", Path: "/v1/audit/events?" + fq.Encode()})
				if err != nil {
					return err
				}
				defer body.Close()
				seen := map[string]bool{}
				if tail > 0 {
					q.Set("limit", fmt.Sprint(tail))
					var out map[string]any
					if err := cl.Do(ctxOf(cmd), clientReq("GET", "/v1/audit/events?"+q.Encode(), nil), &out); err != nil {
						return err
					}
					last := list(out, "events")
					for i := len(last) - 1; i >= 0; i-- { // oldest first, as the stream goes on
						seen[str(last[i], "id")] = true
						c.followLine(last[i])
					}
				}
				sc := bufio.NewScanner(body)
				sc.Buffer(make([]byte, 1<<20), 1<<20)
				for sc.Scan() {
					var ev map[string]any
					if json.Unmarshal(sc.Bytes(), &ev) != nil {
						continue
					}
					if id := str(ev, "id"); id != "" && seen[id] {
						delete(seen, id)
						continue
					}
					c.followLine(ev)
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
	cmd.Flags().StringVar(&since, "since", "", "only events since this long ago (30m, 2h) or since this RFC 3339 time")
	cmd.Flags().IntVar(&tail, "tail", 10, "with --follow: how many of the last events to print first (0: only new ones)")
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

// followLine prints one event of --follow: a line, or with --output json
// one JSON object a line.
func (c *cli) followLine(ev map[string]any) {
	if c.output == "json" {
		b, _ := json.Marshal(ev)
		fmt.Fprintln(c.out, string(b))
		return
	}
	c.eventLine(ev)
}

// sinceTime reads --since: a duration back from now, or an RFC 3339 time.
func sinceTime(since string, now time.Time) (string, error) {
	if since == "" {
		return "", nil
	}
	if d, err := time.ParseDuration(since); err == nil && d > 0 {
		return now.Add(-d).UTC().Format(time.RFC3339), nil
	}
	if t, err := time.Parse(time.RFC3339, since); err == nil {
		return t.UTC().Format(time.RFC3339), nil
	}
	return "", usageError{fmt.Errorf("--since %s is neither a duration (30m, 2h) nor an RFC 3339 time (2006-01-02T15:04:05Z)", since)}
}
