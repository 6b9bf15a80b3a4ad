package main

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/keyline/keyline/internal/client"
	"github.com/spf13/cobra"
)

func newIAMCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{Use: "iam", Short: "API keys, service IDs, access policies and service authorizations"}
	cmd.AddCommand(
		c.apiKeyCreateCmd(), c.apiKeysCmd(), c.apiKeyDeleteCmd(),
		c.serviceIDCreateCmd(), c.serviceAPIKeyCreateCmd(), c.userInviteCmd(),
		c.policyCreateCmd(), c.authzCreateCmd(), c.authzListCmd(), c.authzShowCmd(), c.authzDeleteCmd(),
	)
	return cmd
}

func (c *cli) apiKeyCreateCmd() *cobra.Command {
	var desc string
	cmd := &cobra.Command{
		Use: "api-key-create NAME [-d DESCRIPTION]", Short: "Create an API key for yourself (shown once)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := c.client()
			account, iamID, err := whoami(ctxOf(cmd), cl)
			if err != nil {
				return err
			}
			return c.createAPIKey(cmd, cl, args[0], desc, account, iamID)
		},
	}
	cmd.Flags().StringVarP(&desc, "description", "d", "", "description")
	return cmd
}

func (c *cli) createAPIKey(cmd *cobra.Command, cl *client.Client, name, desc, account, iamID string) error {
	var out map[string]any
	body := map[string]any{"name": name, "description": desc, "iam_id": iamID, "account_id": account}
	if err := cl.Do(ctxOf(cmd), client.Request{Method: "POST", Path: "/v1/apikeys", Body: body}, &out); err != nil {
		return err
	}
	if c.output == "json" {
		return c.printJSON(out)
	}
	c.ok("API key %s was created. Save it now: it cannot be shown again.", name)
	c.fields([2]string{"Name", str(out, "name")}, [2]string{"ID", str(out, "id")}, [2]string{"IAM ID", str(out, "iam_id")}, [2]string{"API Key", str(out, "apikey")})
	return nil
}

func (c *cli) apiKeysCmd() *cobra.Command {
	return &cobra.Command{
		Use: "api-keys", Short: "List your API keys", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := c.client()
			account, iamID, err := whoami(ctxOf(cmd), cl)
			if err != nil {
				return err
			}
			var out map[string]any
			q := url.Values{"account_id": {account}, "iam_id": {iamID}}
			if err := cl.Do(ctxOf(cmd), clientReq("GET", "/v1/apikeys?"+q.Encode(), nil), &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			var rows [][]string
			for _, k := range list(out, "apikeys") {
				rows = append(rows, []string{str(k, "id"), str(k, "name"), str(k, "created_at")})
			}
			c.table([]string{"ID", "Name", "Created"}, rows)
			return nil
		},
	}
}

func (c *cli) apiKeyDeleteCmd() *cobra.Command {
	return &cobra.Command{
		Use: "api-key-delete ID", Short: "Delete an API key", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.client().Do(ctxOf(cmd), clientReq("DELETE", client.Path("v1", "apikeys", args[0]), nil), nil); err != nil {
				return err
			}
			c.ok("API key %s was deleted.", args[0])
			return nil
		},
	}
}

func (c *cli) serviceIDCreateCmd() *cobra.Command {
	return &cobra.Command{
		Use: "service-id-create NAME", Short: "Create a service ID", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, account, err := c.withAccount(cmd)
			if err != nil {
				return err
			}
			var out map[string]any
			if err := cl.Do(ctxOf(cmd), client.Request{Method: "POST", Path: "/v1/serviceids", Body: map[string]any{"name": args[0], "account_id": account}}, &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			c.ok("Service ID %s was created.", args[0])
			c.fields([2]string{"ID", str(out, "id")}, [2]string{"IAM ID", str(out, "iam_id")}, [2]string{"CRN", str(out, "crn")})
			return nil
		},
	}
}

func (c *cli) serviceAPIKeyCreateCmd() *cobra.Command {
	return &cobra.Command{
		Use: "service-api-key-create NAME SERVICE_ID_IAM_ID", Short: "Create an API key for a service ID or an invited user (shown once)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, account, err := c.withAccount(cmd)
			if err != nil {
				return err
			}
			return c.createAPIKey(cmd, cl, args[0], "", account, args[1])
		},
	}
}

func (c *cli) userInviteCmd() *cobra.Command {
	return &cobra.Command{
		Use: "user-invite EMAIL", Short: "Add a user to the account", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, account, err := c.withAccount(cmd)
			if err != nil {
				return err
			}
			var out map[string]any
			body := map[string]any{"users": []map[string]any{{"email": args[0], "account_role": "Member"}}}
			if err := cl.Do(ctxOf(cmd), client.Request{Method: "POST", Path: client.Path("v2", "accounts", account, "users"), Body: body}, &out); err != nil {
				return err
			}
			return c.printJSON(out)
		},
	}
}

func (c *cli) policyCreateCmd() *cobra.Command {
	var roles, service, instance, resourceType, resource string
	cmd := &cobra.Command{
		Use:     "user-policy-create IAM_ID --roles ROLES --service-name SERVICE [--service-instance GUID] [--resource-type TYPE [--resource NAME]]",
		Aliases: []string{"service-policy-create"},
		Short:   "Give a user or service ID roles on a service, an instance, or resources of an instance",
		Example: "  keyline iam service-policy-create iam-ServiceId-... --roles Writer --service-name messagehub --service-instance GUID --resource-type topic --resource 'orders-*'",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if roles == "" || service == "" {
				return usageError{errorf("--roles and --service-name are required")}
			}
			if resource != "" && resourceType == "" {
				return usageError{errorf("--resource needs --resource-type")}
			}
			cl, account, err := c.withAccount(cmd)
			if err != nil {
				return err
			}
			attrs := []map[string]any{{"name": "accountId", "value": account}, {"name": "serviceName", "value": service}}
			if instance != "" {
				attrs = append(attrs, map[string]any{"name": "serviceInstance", "value": instance})
			}
			if resourceType != "" {
				attrs = append(attrs, map[string]any{"name": "resourceType", "value": resourceType})
			}
			if resource != "" {
				a := map[string]any{"name": "resource", "value": resource}
				if strings.HasSuffix(resource, "*") {
					a["operator"] = "stringMatch"
				}
				attrs = append(attrs, a)
			}
			body := map[string]any{
				"type":      "access",
				"subjects":  []map[string]any{{"attributes": []map[string]any{{"name": "iam_id", "value": args[0]}}}},
				"roles":     roleRefs(roles),
				"resources": []map[string]any{{"attributes": attrs}},
			}
			var out map[string]any
			if err := cl.Do(ctxOf(cmd), client.Request{Method: "POST", Path: "/v1/policies", Body: body}, &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			c.ok("Policy %s was created.", str(out, "id"))
			return nil
		},
	}
	cmd.Flags().StringVar(&roles, "roles", "", "roles, e.g. Reader or Writer,Manager")
	cmd.Flags().StringVar(&service, "service-name", "", "service, e.g. kms or messagehub")
	cmd.Flags().StringVar(&instance, "service-instance", "", "one instance GUID (default: all)")
	cmd.Flags().StringVar(&resourceType, "resource-type", "", "resources of one type within the instance; messagehub: cluster, topic, group or txnid (default: the whole instance)")
	cmd.Flags().StringVar(&resource, "resource", "", "one resource of --resource-type by name, or names by prefix with a trailing * (orders-*) (default: all of the type)")
	return cmd
}

func roleRefs(roles string) []map[string]any {
	var out []map[string]any
	for _, r := range splitRoles(roles) {
		id := r
		if !strings.HasPrefix(r, "crn:") {
			switch r {
			case "AuthorizationDelegator", "Viewer", "Operator", "Editor", "Administrator":
				id = "crn:v1:bluemix:public:iam::::role:" + r
			default:
				id = "crn:v1:bluemix:public:iam::::serviceRole:" + r
			}
		}
		out = append(out, map[string]any{"role_id": id})
	}
	return out
}

func (c *cli) authzCreateCmd() *cobra.Command {
	var srcInst, tgtInst string
	cmd := &cobra.Command{
		Use:   "authorization-policy-create SOURCE_SERVICE TARGET_SERVICE ROLES [--source-service-instance-id ID] [--target-service-instance-id ID]",
		Short: "Authorize a service to use another (e.g. messagehub kms Reader,AuthorizationDelegator)",
		Args:  cobra.ExactArgs(3),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, account, err := c.withAccount(cmd)
			if err != nil {
				return err
			}
			// The policy matches instances by GUID: a name or CRN would
			// write a policy that matches nothing, so look it up.
			for _, ref := range []*string{&srcInst, &tgtInst} {
				if *ref == "" {
					continue
				}
				in, err := c.instance(cmd, cl, *ref)
				if err != nil {
					var ae *client.Error
					if errors.As(err, &ae) && ae.Status == 404 {
						return &client.Error{Status: 404, Message: fmt.Sprintf("no service instance %q: name the instance by its name, GUID or CRN (see 'keyline resource service-instances')", *ref)}
					}
					return err
				}
				*ref = str(in, "guid")
			}
			subj := []map[string]any{{"name": "accountId", "value": account}, {"name": "serviceName", "value": args[0]}}
			if srcInst != "" {
				subj = append(subj, map[string]any{"name": "serviceInstance", "value": srcInst})
			}
			res := []map[string]any{{"name": "accountId", "operator": "stringEquals", "value": account}, {"name": "serviceName", "operator": "stringEquals", "value": args[1]}}
			if tgtInst != "" {
				res = append(res, map[string]any{"name": "serviceInstance", "operator": "stringEquals", "value": tgtInst})
			}
			body := map[string]any{"type": "authorization", "subjects": []map[string]any{{"attributes": subj}},
				"roles": roleRefs(args[2]), "resources": []map[string]any{{"attributes": res}}}
			var out map[string]any
			if err := cl.Do(ctxOf(cmd), client.Request{Method: "POST", Path: "/v1/policies", Body: body}, &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			c.ok("Authorization policy %s was created.", str(out, "id"))
			c.printAuthz(out)
			return nil
		},
	}
	cmd.Flags().StringVar(&srcInst, "source-service-instance-id", "", "one source instance: GUID, name or CRN (default: all instances)")
	cmd.Flags().StringVar(&tgtInst, "target-service-instance-id", "", "one target instance: GUID, name or CRN (default: all instances)")
	return cmd
}

// attr finds an attribute value in a policy's subjects or resources.
func attr(p map[string]any, field, name string) string {
	for _, s := range list(p, field) {
		for _, a := range list(s, "attributes") {
			if str(a, "name") == name {
				return str(a, "value")
			}
		}
	}
	return ""
}

func roleNames(p map[string]any) string {
	var names []string
	for _, r := range list(p, "roles") {
		if n := str(r, "display_name"); n != "" {
			names = append(names, n)
			continue
		}
		id := str(r, "role_id")
		names = append(names, id[strings.LastIndexByte(id, ':')+1:])
	}
	return strings.Join(names, ", ")
}

func policyType(p map[string]any) string {
	if by := str(p, "created_by_id"); strings.HasPrefix(by, "crn-") {
		return "Created by " + strings.TrimPrefix(by, "crn-")
	}
	return "User defined"
}

func (c *cli) printAuthz(p map[string]any) {
	or := func(s, d string) string {
		if s == "" {
			return d
		}
		return s
	}
	c.fields(
		[2]string{"ID", str(p, "id")},
		[2]string{"Source service name", attr(p, "subjects", "serviceName")},
		[2]string{"Source service instance", or(attr(p, "subjects", "serviceInstance"), "All instances")},
		[2]string{"Target service name", attr(p, "resources", "serviceName")},
		[2]string{"Target service instance", or(attr(p, "resources", "serviceInstance"), "All instances")},
		[2]string{"Roles", roleNames(p)},
		[2]string{"Type", policyType(p)},
	)
}

func (c *cli) authzListCmd() *cobra.Command {
	return &cobra.Command{
		Use: "authorization-policies", Short: "List service authorizations (Role, Source, Target, Type)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, account, err := c.withAccount(cmd)
			if err != nil {
				return err
			}
			var out map[string]any
			q := url.Values{"account_id": {account}, "type": {"authorization"}}
			if err := cl.Do(ctxOf(cmd), clientReq("GET", "/v1/policies?"+q.Encode(), nil), &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			var rows [][]string
			for _, p := range list(out, "policies") {
				rows = append(rows, []string{str(p, "id"), roleNames(p), attr(p, "subjects", "serviceName") + " service", attr(p, "resources", "serviceName") + " service", policyType(p)})
			}
			c.table([]string{"ID", "Role", "Source", "Target", "Type"}, rows)
			return nil
		},
	}
}

func (c *cli) authzShowCmd() *cobra.Command {
	return &cobra.Command{
		Use: "authorization-policy ID", Short: "Show a service authorization", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]any
			if err := c.client().Do(ctxOf(cmd), clientReq("GET", client.Path("v1", "policies", args[0]), nil), &out); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(out)
			}
			c.printAuthz(out)
			return nil
		},
	}
}

func (c *cli) authzDeleteCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: "authorization-policy-delete ID [-f]", Short: "Delete a service authorization", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.confirm(force, fmt.Sprintf("Delete authorization policy %s? Deployments that use keys through it can lose access to them.", args[0])); err != nil {
				return err
			}
			if err := c.client().Do(ctxOf(cmd), clientReq("DELETE", client.Path("v1", "policies", args[0]), nil), nil); err != nil {
				return err
			}
			c.ok("Authorization policy %s was deleted.", args[0])
			return nil
		},
	}
	forceFlag(cmd, &force)
	return cmd
}
