package main

import (
	"encoding/base64"
	"net/url"
	"os"

	"github.com/keyline/keyline/internal/client"
	"github.com/spf13/cobra"
)

type kpCmd struct {
	*cli
	instance string
}

func newKPCmd(c *cli) *cobra.Command {
	k := &kpCmd{cli: c}
	cmd := &cobra.Command{Use: "kp", Short: "Key Protect: keys, rotation, deletion and registrations"}
	cmd.PersistentFlags().StringVarP(&k.instance, "instance-ID", "i", "", "Key Protect instance GUID or name (or KP_INSTANCE_ID)")
	key := &cobra.Command{Use: "key", Short: "Manage one key"}
	key.AddCommand(k.createCmd(), k.showCmd(), k.actionCmd("rotate", "Rotate a root key (adds a version)"),
		k.actionCmd("disable", "Disable a root key (deployments using it lock)"), k.actionCmd("enable", "Enable a disabled root key"),
		k.deleteCmd(), k.restoreCmd(), k.syncCmd())
	cmd.AddCommand(k.keysCmd(), key, k.registrationsCmd())
	return cmd
}

// instanceGUID resolves -i (GUID or instance name).
func (k *kpCmd) instanceGUID(cmd *cobra.Command, cl *client.Client) (string, error) {
	ref := firstNonEmpty(k.instance, os.Getenv("KP_INSTANCE_ID"))
	if ref == "" {
		return "", usageError{errorf("name the Key Protect instance with -i GUID or KP_INSTANCE_ID")}
	}
	if looksLikeGUID(ref) {
		return ref, nil
	}
	in, err := k.cli.instance(cmd, cl, ref)
	if err != nil {
		return "", err
	}
	return str(in, "guid"), nil
}

func (k *kpCmd) do(cmd *cobra.Command, method, path string, header map[string]string, body any, out any) error {
	cl := k.client()
	guid, err := k.instanceGUID(cmd, cl)
	if err != nil {
		return err
	}
	h := map[string]string{"bluemix-instance": guid}
	for n, v := range header {
		h[n] = v
	}
	return cl.Do(ctxOf(cmd), client.Request{Method: method, Path: "/api/v2" + path, Header: h, Body: body}, out)
}

func (k *kpCmd) keysCmd() *cobra.Command {
	var state string
	cmd := &cobra.Command{
		Use: "keys [--state 0,1,2,3,5]", Short: "List keys", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			q := url.Values{}
			if state != "" {
				q.Set("state", state)
			}
			var out map[string]any
			if err := k.do(cmd, "GET", "/keys?"+q.Encode(), nil, nil, &out); err != nil {
				return err
			}
			if k.output == "json" {
				return k.printJSON(out)
			}
			var rows [][]string
			for _, key := range list(out, "resources") {
				kind := "root"
				if key["extractable"] == true {
					kind = "standard"
				}
				rows = append(rows, []string{str(key, "id"), str(key, "name"), stateName(str(key, "state")), kind, str(key, "lastRotateDate")})
			}
			k.table([]string{"Key ID", "Key Name", "State", "Type", "Last Rotated"}, rows)
			return nil
		},
	}
	cmd.Flags().StringVar(&state, "state", "", "key states to list (5 = deleted)")
	return cmd
}

func stateName(s string) string {
	switch s {
	case "0":
		return "Pre-activation"
	case "1":
		return "Active"
	case "2":
		return "Suspended"
	case "3":
		return "Deactivated"
	case "5":
		return "Destroyed"
	}
	return s
}

func (k *kpCmd) printKey(key map[string]any) {
	pairs := [][2]string{{"Key ID", str(key, "id")}, {"Key Name", str(key, "name")}, {"State", stateName(str(key, "state"))},
		{"CRN", str(key, "crn")}, {"Extractable", str(key, "extractable")}, {"Key Ring", str(key, "keyRingID")},
		{"Key Version", str(obj(key, "keyVersion"), "id")}, {"Created", str(key, "creationDate")}}
	if d := str(key, "lastRotateDate"); d != "" {
		pairs = append(pairs, [2]string{"Last Rotated", d})
	}
	if d := str(key, "deletionDate"); d != "" {
		pairs = append(pairs, [2]string{"Deleted", d})
	}
	k.fields(pairs...)
}

func (k *kpCmd) createCmd() *cobra.Command {
	var payload string
	var standard bool
	var desc string
	cmd := &cobra.Command{
		Use: "create NAME [-k BASE64_KEY_MATERIAL] [-s] [-d DESCRIPTION]", Short: "Create (or import) a root key, or a standard key with -s", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			res := map[string]any{"type": "application/vnd.ibm.kms.key+json", "name": args[0], "extractable": standard}
			if desc != "" {
				res["description"] = desc
			}
			if payload != "" {
				if _, err := base64.StdEncoding.DecodeString(payload); err != nil {
					return usageError{errorf("-k must be base64 key material")}
				}
				res["payload"] = payload
			}
			body := map[string]any{"metadata": map[string]any{"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1}, "resources": []any{res}}
			var out map[string]any
			if err := k.do(cmd, "POST", "/keys", nil, body, &out); err != nil {
				return err
			}
			if k.output == "json" {
				return k.printJSON(out)
			}
			k.ok("")
			if keys := list(out, "resources"); len(keys) == 1 {
				k.printKey(keys[0])
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&payload, "key-material", "k", "", "base64 key material to import")
	cmd.Flags().BoolVarP(&standard, "standard-key", "s", false, "create a standard (extractable) key")
	cmd.Flags().StringVarP(&desc, "description", "d", "", "description")
	return cmd
}

func (k *kpCmd) showCmd() *cobra.Command {
	return &cobra.Command{
		Use: "show KEY_ID|ALIAS", Short: "Show a key's metadata", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]any
			if err := k.do(cmd, "GET", client.Path("keys", args[0], "metadata"), nil, nil, &out); err != nil {
				return err
			}
			if k.output == "json" {
				return k.printJSON(out)
			}
			if keys := list(out, "resources"); len(keys) == 1 {
				k.printKey(keys[0])
			}
			return nil
		},
	}
}

func (k *kpCmd) actionCmd(action, short string) *cobra.Command {
	return &cobra.Command{
		Use: action + " KEY_ID|ALIAS", Short: short, Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := []byte("{}")
			if action != "rotate" {
				body = []byte("null")
			}
			if err := k.do(cmd, "POST", client.Path("keys", args[0], "actions", action), nil, body, nil); err != nil {
				return err
			}
			k.ok("Key %s: %s done.", args[0], action)
			return nil
		},
	}
}

func (k *kpCmd) deleteCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use: "delete KEY_ID|ALIAS [--force]", Short: "Delete a key; --force deletes a key that protects resources (cryptoshredding)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := client.Path("keys", args[0])
			if force {
				path += "?force=true"
			}
			var out map[string]any
			if err := k.do(cmd, "DELETE", path, map[string]string{"Prefer": "return=representation"}, nil, &out); err != nil {
				return err
			}
			if k.output == "json" {
				return k.printJSON(out)
			}
			k.ok("Deleted key %s.", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "delete even though resources are registered (destroys their data)")
	return cmd
}

func (k *kpCmd) restoreCmd() *cobra.Command {
	return &cobra.Command{
		Use: "restore KEY_ID", Short: "Restore a deleted root key (within 30 days)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var out map[string]any
			if err := k.do(cmd, "POST", client.Path("keys", args[0], "restore"), nil, nil, &out); err != nil {
				return err
			}
			if k.output == "json" {
				return k.printJSON(out)
			}
			k.ok("Restored key %s.", args[0])
			return nil
		},
	}
}

func (k *kpCmd) syncCmd() *cobra.Command {
	return &cobra.Command{
		Use: "sync KEY_ID", Short: "Notify the services registered on a key again", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := k.do(cmd, "POST", client.Path("keys", args[0], "actions", "sync"), nil, nil, nil); err != nil {
				return err
			}
			k.ok("")
			return nil
		},
	}
}

func (k *kpCmd) registrationsCmd() *cobra.Command {
	var key, crnQuery string
	cmd := &cobra.Command{
		Use: "registrations [-k KEY_ID] [-c CRN_PATTERN]", Short: "List the resources your keys protect", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/keys/registrations"
			if key != "" {
				path = client.Path("keys", key, "registrations")
			}
			if crnQuery != "" {
				path += "?urlEncodedResourceCRNQuery=" + url.QueryEscape(crnQuery)
			}
			var out map[string]any
			if err := k.do(cmd, "GET", path, nil, nil, &out); err != nil {
				return err
			}
			if k.output == "json" {
				return k.printJSON(out)
			}
			var rows [][]string
			for _, r := range list(out, "resources") {
				rows = append(rows, []string{str(r, "keyId"), str(r, "resourceCrn"), str(obj(r, "keyVersion"), "id"), str(r, "preventKeyDeletion"), str(r, "creationDate")})
			}
			k.table([]string{"Key ID", "Resource CRN", "Key Version", "Prevent Deletion", "Created"}, rows)
			return nil
		},
	}
	cmd.Flags().StringVarP(&key, "key-id", "k", "", "only this key")
	cmd.Flags().StringVarP(&crnQuery, "crn-query", "c", "", "CRN pattern, e.g. crn:v1:bluemix:public:messagehub:us-south:a/ACCOUNT:*:*:*")
	return cmd
}
