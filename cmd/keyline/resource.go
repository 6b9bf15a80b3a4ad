package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/controller"
	"github.com/spf13/cobra"
)

func newResourceCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{Use: "resource", Short: "Service instances, credentials, reclamations and tasks"}
	cmd.AddCommand(c.instanceCreateCmd(), c.instancesCmd(), c.instanceShowCmd(), c.instanceDeleteCmd(),
		c.serviceKeyCreateCmd(), c.serviceKeysCmd(), c.serviceKeyShowCmd(), c.serviceKeyDeleteCmd(), c.reclamationsCmd(), c.reclamationActionCmd("reclamation-restore", "restore", "Restore a deleted instance"),
		c.reclamationActionCmd("reclamation-delete", "reclaim", "Delete an instance for good (unrecoverable) [-f]"), c.tasksCmd())
	cmd.AddCommand(c.backupCmds()...)
	return cmd
}

// readParams reads -p as a JSON string or @file.
func readParams(p string) (map[string]any, error) {
	if p == "" {
		return nil, nil
	}
	data := []byte(p)
	if strings.HasPrefix(p, "@") {
		var err error
		if data, err = os.ReadFile(p[1:]); err != nil {
			return nil, usageError{err}
		}
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, usageError{fmt.Errorf("-p must be a JSON object or @file: %v", err)}
	}
	return m, nil
}

func (c *cli) instanceCreateCmd() *cobra.Command {
	var params string
	cmd := &cobra.Command{
		Use:   "service-instance-create NAME SERVICE_NAME SERVICE_PLAN_NAME LOCATION [-p @JSON_FILE|JSON_STRING]",
		Short: "Create a service instance (kms, messagehub)",
		Long: `Create a service instance: a Key Protect instance (kms tiered-pricing) or an Event Streams
deployment (messagehub standard).

An Event Streams deployment can be encrypted with your own Key Protect root keys, named by their
full CRN (crn:v1:bluemix:public:kms:<region>:a/<account>:<instance GUID>:key:<key ID>), which
'keyline kp keys -i INSTANCE' and 'keyline kp key show KEY_ID -i INSTANCE' print in full:
  disk_encryption_key_crn     the key of the deployment's data
  backup_encryption_key_crn   the key of its backups (default: the disk key)
The deployment needs the messagehub -> kms authorization first (Reader and
AuthorizationDelegator roles): see 'keyline iam authorization-policy-create --help'.
` + controller.BackupRegionAdvice,
		Example: `  keyline resource service-instance-create my-kp kms tiered-pricing us-south
  keyline resource service-instance-create my-es messagehub standard us-south -p '{
    "disk_encryption_key_crn": "crn:v1:bluemix:public:kms:us-south:a/4a7d5c0e9f1b4e3d8c2a6b5f0e9d8c7b:0f3c2a1e-7b6d-4c5e-9a8f-1e2d3c4b5a69:key:9d8c7b6a-5f4e-4d3c-8b2a-1f0e9d8c7b6a",
    "backup_encryption_key_crn": "crn:v1:bluemix:public:kms:eu-de:a/4a7d5c0e9f1b4e3d8c2a6b5f0e9d8c7b:7e6d5c4b-3a29-4f18-8e7d-6c5b4a392817:key:1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"}'
  keyline resource service-instance-create my-es messagehub standard us-south -p @params.json`,
		Args: cobra.ExactArgs(4),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := readParams(params)
			if err != nil {
				return err
			}
			body := map[string]any{"name": args[0], "resource_id": args[1], "resource_plan_id": args[2], "target": args[3]}
			if p != nil {
				body["parameters"] = p
			}
			var out map[string]any
			if err := c.client().Do(ctxOf(cmd), client.Request{Method: "POST", Path: "/v2/resource_instances", Body: body}, &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			c.ok("Service instance %s was created.", args[0])
			c.printInstance(out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&params, "parameters", "p", "", "parameters as JSON or @file")
	return cmd
}

func (c *cli) printInstance(in map[string]any) {
	pairs := [][2]string{
		{"Name", str(in, "name")}, {"ID", str(in, "id")}, {"GUID", str(in, "guid")},
		{"Location", str(in, "region_id")}, {"Service Name", firstNonEmpty(str(in, "sub_type"), str(in, "resource_id"))}, {"Service Plan ID", str(in, "resource_plan_id")},
		{"State", str(in, "state")},
	}
	if r := str(in, "state_reason"); r != "" {
		pairs = append(pairs, [2]string{"State Reason", r})
	}
	params := obj(in, "parameters")
	for _, k := range sortedKeys(params) {
		if v, ok := params[k].(string); ok {
			pairs = append(pairs, [2]string{k, v})
		}
	}
	if at := str(in, "scheduled_reclaim_at"); at != "" {
		pairs = append(pairs, [2]string{"Scheduled reclaim at", at})
	}
	for _, w := range list(in, "warnings") {
		pairs = append(pairs, [2]string{"Warning", str(w, "message")})
	}
	if ws, ok := in["warnings"].([]any); ok {
		for _, w := range ws {
			if s, ok := w.(string); ok {
				pairs = append(pairs, [2]string{"Warning", s})
			}
		}
	}
	c.fields(pairs...)
}

// listedStates are the states service-instances lists by default: all but
// removed and pending_reclamation (those are under reclamations).
const listedStates = "active,provisioning,inactive,failed"

func (c *cli) instancesCmd() *cobra.Command {
	var service, state string
	cmd := &cobra.Command{
		Use: "service-instances [--service-name NAME] [--state STATE]", Short: "List service instances", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if service != "" {
				q.Set("resource_id", service)
			}
			// The API lists only active and provisioning instances unless
			// asked; a person wants to see the locked (inactive) and
			// failed ones too, with their state.
			q.Set("state", firstNonEmpty(state, listedStates))
			var out map[string]any
			if err := c.client().Do(ctxOf(cmd), clientReq("GET", "/v2/resource_instances?"+q.Encode(), nil), &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			var rows [][]string
			for _, in := range list(out, "resources") {
				st := str(in, "state")
				if r := str(in, "state_reason"); r != "" {
					st += " (" + r + ")"
				}
				rows = append(rows, []string{str(in, "name"), str(in, "guid"), str(in, "region_id"), firstNonEmpty(str(in, "sub_type"), str(in, "resource_id")), st})
			}
			c.table([]string{"Name", "GUID", "Location", "Service", "State"}, rows)
			if state == "" {
				fmt.Fprintln(c.out, "\nDeleted instances waiting for reclamation: keyline resource reclamations")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&service, "service-name", "", "only instances of this service")
	cmd.Flags().StringVar(&state, "state", "", "only instances in these states, comma separated (default "+listedStates+")")
	return cmd
}

// instance resolves a name, GUID or CRN to the instance.
func (c *cli) instance(cmd *cobra.Command, cl *client.Client, ref string) (map[string]any, error) {
	return c.lookup(cmd, cl, "resource_instances", "service instance", ref,
		url.Values{"state": {"active,provisioning,inactive,pending_reclamation,failed"}})
}

// lookup finds one item of /v2/<collection> by GUID or CRN, or else by name
// (with the extra query q), which must name exactly one.
func (c *cli) lookup(cmd *cobra.Command, cl *client.Client, collection, noun, ref string, q url.Values) (map[string]any, error) {
	var out map[string]any
	if strings.HasPrefix(ref, "crn:") || looksLikeGUID(ref) {
		err := cl.Do(ctxOf(cmd), clientReq("GET", client.Path("v2", collection, ref), nil), &out)
		return out, err
	}
	q.Set("name", ref)
	if err := cl.Do(ctxOf(cmd), clientReq("GET", "/v2/"+collection+"?"+q.Encode(), nil), &out); err != nil {
		return nil, err
	}
	found := list(out, "resources")
	if len(found) == 0 {
		return nil, &client.Error{Status: 404, Message: fmt.Sprintf("no %s is named %q", noun, ref)}
	}
	if len(found) > 1 {
		// A failed provisioning leaves its instance behind under the name,
		// usually beside the one that worked: the live one is meant.
		live := slices.DeleteFunc(slices.Clone(found), func(in map[string]any) bool { return str(in, "state") == "failed" })
		if len(live) == 1 {
			return live[0], nil
		}
		return nil, usageError{fmt.Errorf("%d %ss are named %q: use the GUID", len(found), noun, ref)}
	}
	return found[0], nil
}

func looksLikeGUID(s string) bool {
	return len(s) == 36 && strings.Count(s, "-") == 4
}

func (c *cli) instanceShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "service-instance NAME|GUID|CRN", Short: "Show a service instance and its security settings", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			in, err := c.instance(cmd, c.client(), args[0])
			if err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(in)
			}
			c.printInstance(in)
			return nil
		},
	}
}

func (c *cli) instanceDeleteCmd() *cobra.Command {
	return c.deleteCmd("service-instance-delete NAME|GUID|CRN [-f]", "Delete a service instance (it waits in reclamation first)",
		"resource_instances", c.instance, "Delete service instance %s (%s)? It can be restored until its reclamation ends.",
		"Service instance %s was deleted; it can be restored until its reclamation ends.")
}

// deleteCmd is a command that resolves its argument with resolve, then
// deletes it under /v2/<collection>/<guid> and says done (with its name).
func (c *cli) deleteCmd(use, short, collection string, resolve func(*cobra.Command, *client.Client, string) (map[string]any, error), question, done string) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: use, Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := c.client()
			it, err := resolve(cmd, cl, args[0])
			if err != nil {
				return err
			}
			if err := c.confirm(force, fmt.Sprintf(question, str(it, "name"), str(it, "guid"))); err != nil {
				return err
			}
			if err := cl.Do(ctxOf(cmd), clientReq("DELETE", client.Path("v2", collection, str(it, "guid")), nil), nil); err != nil {
				return err
			}
			c.ok(done, str(it, "name"))
			return nil
		},
	}
	forceFlag(cmd, &force)
	return cmd
}

func (c *cli) serviceKeyCreateCmd() *cobra.Command {
	var role string
	cmd := &cobra.Command{
		Use: "service-key-create NAME [ROLE] --instance-name INSTANCE", Short: "Create service credentials", Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			inst, _ := cmd.Flags().GetString("instance-name")
			if inst == "" {
				return usageError{errorf("--instance-name is required")}
			}
			cl := c.client()
			in, err := c.instance(cmd, cl, inst)
			if err != nil {
				return err
			}
			body := map[string]any{"name": args[0], "source": str(in, "guid")}
			if len(args) == 2 {
				role = args[1]
			}
			if role != "" {
				body["role"] = roleRefs(role)[0]["role_id"]
			}
			var out map[string]any
			if err := cl.Do(ctxOf(cmd), client.Request{Method: "POST", Path: "/v2/resource_keys", Body: body}, &out); err != nil {
				return err
			}
			return c.printJSON(out)
		},
	}
	cmd.Flags().String("instance-name", "", "the service instance")
	return cmd
}

func (c *cli) serviceKeysCmd() *cobra.Command {
	var inst string
	cmd := &cobra.Command{
		Use: "service-keys [--instance-name INSTANCE]", Short: "List service credentials (their secrets were shown once, at creation)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := c.client()
			q := url.Values{}
			if inst != "" {
				in, err := c.instance(cmd, cl, inst)
				if err != nil {
					return err
				}
				q.Set("source", str(in, "guid"))
			}
			var out map[string]any
			if err := cl.Do(ctxOf(cmd), clientReq("GET", "/v2/resource_keys?"+q.Encode(), nil), &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			var rows [][]string
			for _, k := range list(out, "resources") {
				rows = append(rows, []string{str(k, "name"), str(k, "guid"), str(k, "state"), roleName(str(k, "role")), str(k, "created_at")})
			}
			c.table([]string{"Name", "GUID", "State", "Role", "Created At"}, rows)
			return nil
		},
	}
	cmd.Flags().StringVar(&inst, "instance-name", "", "only the credentials of this service instance (name, GUID or CRN)")
	return cmd
}

func (c *cli) serviceKeyShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "service-key NAME|GUID|CRN", Short: "Show service credentials (not their secret: it was shown once, at creation)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			k, err := c.serviceKey(cmd, c.client(), args[0])
			if err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(k)
			}
			c.fields([2]string{"Name", str(k, "name")}, [2]string{"GUID", str(k, "guid")}, [2]string{"CRN", str(k, "crn")},
				[2]string{"State", str(k, "state")}, [2]string{"Role", roleName(str(k, "role"))},
				[2]string{"Source", str(k, "source_crn")}, [2]string{"Created At", str(k, "created_at")})
			return nil
		},
	}
}

func (c *cli) serviceKeyDeleteCmd() *cobra.Command {
	return c.deleteCmd("service-key-delete NAME|GUID|CRN [-f]", "Delete service credentials: their API key stops working and their connections are closed",
		"resource_keys", c.serviceKey, "Delete service key %s (%s)? Its API key stops working at once and cannot be restored.",
		"Service key %s was deleted; its API key no longer works.")
}

// serviceKey resolves a name, GUID or CRN to the resource key.
func (c *cli) serviceKey(cmd *cobra.Command, cl *client.Client, ref string) (map[string]any, error) {
	return c.lookup(cmd, cl, "resource_keys", "service key", ref, url.Values{})
}

// roleName is the last part of a role CRN ("Writer" of crn:v1:...:role:Writer).
func roleName(role string) string {
	if i := strings.LastIndex(role, ":"); i >= 0 {
		return role[i+1:]
	}
	return role
}

func (c *cli) reclamationsCmd() *cobra.Command {
	var inst string
	cmd := &cobra.Command{
		Use: "reclamations [--resource-instance-id GUID]", Short: "List deleted instances waiting for reclamation", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if inst != "" {
				q.Set("resource_instance_id", inst)
			}
			var out map[string]any
			if err := c.client().Do(ctxOf(cmd), clientReq("GET", "/v1/reclamations?"+q.Encode(), nil), &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			var rows [][]string
			for _, r := range list(out, "resources") {
				rows = append(rows, []string{str(r, "id"), str(r, "resource_instance_id"), str(r, "state"), str(r, "target_time")})
			}
			c.table([]string{"ID", "Resource Instance ID", "State", "Target Time"}, rows)
			return nil
		},
	}
	cmd.Flags().StringVar(&inst, "resource-instance-id", "", "only this instance")
	return cmd
}

func (c *cli) reclamationActionCmd(use, action, short string) *cobra.Command {
	var comment string
	var force bool
	cmd := &cobra.Command{
		Use: use + " ID [--comment COMMENT]", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if action == "reclaim" {
				if err := c.confirm(force, fmt.Sprintf("Delete the instance of reclamation %s for good? It can never be restored.", args[0])); err != nil {
					return err
				}
			}
			var out map[string]any
			body := map[string]any{"comment": comment}
			if err := c.client().Do(ctxOf(cmd), client.Request{Method: "POST", Path: client.Path("v1", "reclamations", args[0], "actions", action), Body: body}, &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			c.ok("Reclamation %s: %s requested.", args[0], action)
			return nil
		},
	}
	cmd.Flags().StringVar(&comment, "comment", "", "comment")
	if action == "reclaim" {
		forceFlag(cmd, &force)
	}
	return cmd
}

func (c *cli) tasksCmd() *cobra.Command {
	var wait bool
	cmd := &cobra.Command{
		Use: "tasks DEPLOYMENT [--wait]", Short: "List a deployment's tasks; --wait follows running ones with a progress bar", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := c.client()
			in, err := c.instance(cmd, cl, args[0])
			if err != nil {
				return err
			}
			path := client.Path("v5", "ibm", "deployments", str(in, "crn"), "tasks")
			drawn := "" // the task whose progress bar is on screen
			for {
				var out map[string]any
				if err := cl.Do(ctxOf(cmd), clientReq("GET", path, nil), &out); err != nil {
					return err
				}
				tasks := list(out, "tasks")
				running := false
				for _, t := range tasks {
					if s := str(t, "status"); s == "running" || s == "queued" {
						running = true
					}
				}
				if !wait || !running {
					if wait && c.output != "json" {
						// Finish the bar on screen with the task's end.
						for _, t := range tasks {
							if str(t, "id") == drawn {
								c.drawTask(c.out, t)
							}
						}
						fmt.Fprintln(c.out)
					}
					if c.output == "json" {
						return c.printJSON(out)
					}
					var rows [][]string
					for _, t := range tasks {
						rows = append(rows, []string{str(t, "description"), str(t, "status"), fmt.Sprintf("%d%%", taskPercent(t)), str(t, "created_at"), str(t, "id")})
					}
					c.table([]string{"Description", "Status", "Progress", "Created", "ID"}, rows)
					return nil
				}
				if c.output != "json" {
					for _, t := range tasks {
						if s := str(t, "status"); s == "running" || s == "queued" {
							c.drawTask(c.out, t)
							drawn = str(t, "id")
							break
						}
					}
				}
				select {
				case <-ctxOf(cmd).Done():
					return ctxOf(cmd).Err()
				case <-time.After(500 * time.Millisecond):
				}
			}
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until no task is running, showing progress")
	return cmd
}

func numberOf(m map[string]any, key string) float64 {
	f, _ := m[key].(float64)
	return f
}

// taskPercent is how far a task got: a completed task is done, whatever
// its last progress report said.
func taskPercent(t map[string]any) int {
	if str(t, "status") == "completed" {
		return 100
	}
	return int(numberOf(t, "progress_percent"))
}

// drawTask redraws the progress bar line of a task.
func (c *cli) drawTask(w io.Writer, t map[string]any) {
	fmt.Fprintf(w, "\r%s %s", progressBar(taskPercent(t), 30), str(t, "description"))
}

// progressBar draws [#####-----] 50%.
func progressBar(percent, width int) string {
	percent = max(0, min(100, percent))
	done := percent * width / 100
	return "[" + strings.Repeat("#", done) + strings.Repeat("-", width-done) + fmt.Sprintf("] %3d%%", percent)
}
