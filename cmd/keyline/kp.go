package main

import (
	"encoding/base64"
	"errors"
	"fmt"
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
		k.deleteCmd(), k.purgeCmd(), k.restoreCmd(), k.syncCmd())
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
				rows = append(rows, []string{str(key, "id"), str(key, "name"), stateName(str(key, "state")), kind, str(key, "lastRotateDate"), str(key, "crn")})
			}
			k.table([]string{"Key ID", "Key Name", "State", "Type", "Last Rotated", "CRN"}, rows)
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

// What deleting and purging a key mean, for the help of both commands.
const keyDeletionTimeline = `Deleting a key destroys it at once: nothing can be encrypted or decrypted with it, and data it
protects becomes unreadable. For 30 days the deletion can be undone with 'keyline kp key restore'
(from 30 seconds after the deletion), which makes that data readable again. From 4 hours after the
deletion the key can be purged with 'keyline kp key purge', which removes it and its registrations
for good: purged, it can never be restored and what it protected is lost. A deleted key that nobody
purges is purged automatically 90 days after its deletion.`

func (k *kpCmd) deleteCmd() *cobra.Command {
	var forceDelete, force bool
	cmd := &cobra.Command{
		Use:   "delete KEY_ID|ALIAS [--force-delete] [-f]",
		Short: "Delete a key (restorable for 30 days); --force-delete also deletes a key that protects resources",
		Long: "Delete a key.\n\n" + keyDeletionTimeline + `

A key registered to resources (see 'keyline kp registrations') is refused with PROTECTED_RESOURCE_ERR
unless --force-delete is given: then those resources (Event Streams deployments and their backups)
lose their data until the key is restored (cryptoshredding).

-f (--force) only skips the confirmation question, as on every keyline command; it never forces
the deletion of a registered key. (In 'ibmcloud kp key delete', --force is the force deletion:
here it is spelled --force-delete.)`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			question := fmt.Sprintf("Delete key %s? It can be restored for 30 days.", args[0])
			if forceDelete {
				question = fmt.Sprintf("Delete key %s even if resources use it? Their data stays unreadable unless the key is restored within 30 days.", args[0])
			}
			if err := k.confirm(force, question); err != nil {
				return err
			}
			path := client.Path("keys", args[0])
			if forceDelete {
				path += "?force=true"
			}
			var out map[string]any
			if err := k.do(cmd, "DELETE", path, map[string]string{"Prefer": "return=representation"}, nil, &out); err != nil {
				var ae *client.Error
				if errors.As(err, &ae) && ae.Code == "PROTECTED_RESOURCE_ERR" {
					return fmt.Errorf("%w\nThe key protects resources: list them with 'keyline kp registrations -k %s -i %s'; delete it anyway with --force-delete (their data becomes unreadable)", err, args[0], k.instanceRef())
				}
				return err
			}
			if k.output == "json" {
				return k.printJSON(out)
			}
			k.ok("Deleted key %s. It can be restored with 'keyline kp key restore %s -i %s' for 30 days, and purged for good after 4 hours.", args[0], args[0], k.instanceRef())
			return nil
		},
	}
	cmd.Flags().BoolVar(&forceDelete, "force-delete", false, "delete even though resources are registered to the key (their data becomes unreadable)")
	forceFlag(cmd, &force)
	return cmd
}

func (k *kpCmd) purgeCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "purge KEY_ID [-f]",
		Short: "Remove a deleted key for good (from 4 hours after its deletion; it can then never be restored)",
		Long:  "Purge a deleted key.\n\n" + keyDeletionTimeline,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := k.confirm(force, fmt.Sprintf("Purge key %s? It can never be restored, and what it protected is lost for good.", args[0])); err != nil {
				return err
			}
			var out map[string]any
			if err := k.do(cmd, "DELETE", client.Path("keys", args[0], "purge"), map[string]string{"Prefer": "return=representation"}, nil, &out); err != nil {
				return err
			}
			if k.output == "json" {
				return k.printJSON(out)
			}
			k.ok("Purged key %s: it is gone for good.", args[0])
			return nil
		},
	}
	forceFlag(cmd, &force)
	return cmd
}

// instanceRef is how to name the instance again in a hint.
func (k *kpCmd) instanceRef() string {
	return firstNonEmpty(k.instance, os.Getenv("KP_INSTANCE_ID"), "INSTANCE")
}

func (k *kpCmd) restoreCmd() *cobra.Command {
	return &cobra.Command{
		Use: "restore KEY_ID", Short: "Restore a deleted root key (from 30 seconds to 30 days after its deletion, unless purged)", Args: cobra.ExactArgs(1),
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
