package main

import (
	"fmt"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/spf13/cobra"
)

// The backup commands, under `keyline resource`.
func (c *cli) backupCmds() []*cobra.Command {
	return []*cobra.Command{c.backupCreateCmd(), c.backupsCmd(), c.backupShowCmd()}
}

func (c *cli) backupCreateCmd() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use: "backup-create DEPLOYMENT [--wait]", Short: "Take an on-demand backup of a deployment; --wait follows it with a progress bar", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := c.client()
			in, err := c.instance(cmd, cl, args[0])
			if err != nil {
				return err
			}
			var out map[string]any
			if err := cl.Do(ctxOf(cmd), client.Request{Method: "POST", Path: client.Path("v5", "ibm", "deployments", str(in, "crn"), "backups")}, &out); err != nil {
				return err
			}
			task := obj(out, "task")
			if wait {
				if task, err = c.waitTask(cmd, cl, str(task, "id")); err != nil {
					return err
				}
			}
			if c.output == "json" {
				return c.printJSON(map[string]any{"task": task})
			}
			switch str(task, "status") {
			case "completed":
				c.ok("The backup of %s completed.", str(in, "name"))
			case "failed":
				c.printTask(task)
				return fmt.Errorf("the backup of %s failed: %s", str(in, "name"), str(task, "reason"))
			default:
				c.ok("A backup of %s was started; follow it with `keyline resource tasks %s --wait`.", str(in, "name"), str(in, "name"))
			}
			c.printTask(task)
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the backup ends, showing its progress")
	return cmd
}

// waitTask polls a task until it ends, drawing its progress.
func (c *cli) waitTask(cmd *cobra.Command, cl *client.Client, id string) (map[string]any, error) {
	for {
		var out map[string]any
		if err := cl.Do(ctxOf(cmd), clientReq("GET", client.Path("v5", "ibm", "tasks", id), nil), &out); err != nil {
			return nil, err
		}
		task := obj(out, "task")
		status := str(task, "status")
		if c.output != "json" {
			c.drawTask(c.errOut, task)
		}
		if status != "running" && status != "queued" {
			if c.output != "json" {
				fmt.Fprintln(c.errOut)
			}
			return task, nil
		}
		select {
		case <-ctxOf(cmd).Done():
			return nil, ctxOf(cmd).Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

func (c *cli) printTask(t map[string]any) {
	pairs := [][2]string{{"Task", str(t, "id")}, {"Description", str(t, "description")}, {"Status", str(t, "status")},
		{"Progress", fmt.Sprintf("%d%%", taskPercent(t))}}
	if r := str(t, "reason"); r != "" {
		pairs = append(pairs, [2]string{"Reason", r})
	}
	c.fields(pairs...)
}

func (c *cli) backupsCmd() *cobra.Command {
	return &cobra.Command{
		Use: "backups DEPLOYMENT", Short: "List a deployment's backups, newest first", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := c.client()
			in, err := c.instance(cmd, cl, args[0])
			if err != nil {
				return err
			}
			var out map[string]any
			if err := cl.Do(ctxOf(cmd), clientReq("GET", client.Path("v5", "ibm", "deployments", str(in, "crn"), "backups"), nil), &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			var rows [][]string
			for _, b := range list(out, "backups") {
				rows = append(rows, []string{str(b, "id"), str(b, "type"), str(b, "status"), yesNo(b["is_restorable"] == true), str(b, "created_at")})
			}
			c.table([]string{"ID", "Type", "Status", "Restorable", "Created"}, rows)
			return nil
		},
	}
}

func (c *cli) backupShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "backup-show BACKUP_ID", Short: "Show a backup (its CRN or id)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]any
			if err := c.client().Do(ctxOf(cmd), clientReq("GET", client.Path("v5", "ibm", "backups", args[0]), nil), &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			b := obj(out, "backup")
			pairs := [][2]string{{"ID", str(b, "id")}, {"Deployment", str(b, "deployment_id")}, {"Type", str(b, "type")},
				{"Status", str(b, "status")}, {"Restorable", yesNo(b["is_restorable"] == true)}, {"Created", str(b, "created_at")}}
			if k := str(b, "encryption_key_crn"); k != "" {
				pairs = append(pairs, [2]string{"Key", k})
			}
			if r := str(b, "reason"); r != "" {
				pairs = append(pairs, [2]string{"Reason", r})
			}
			c.fields(pairs...)
			return nil
		},
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
