package main

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/keyline/keyline/internal/client"
	"github.com/spf13/cobra"
)

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func clientReq(method, path string, header map[string]string) client.Request {
	return client.Request{Method: method, Path: path, Header: header}
}

// whoami returns the caller's account and IAM ID.
func whoami(ctx context.Context, cl *client.Client) (account, iamID string, err error) {
	var d map[string]any
	if err := cl.Do(ctx, clientReq("GET", "/v1/apikeys/details", map[string]string{"IAM-ApiKey": cl.APIKey}), &d); err != nil {
		return "", "", err
	}
	return str(d, "account_id"), str(d, "iam_id"), nil
}

// withAccount returns a client and the account of the caller's API key.
func (c *cli) withAccount(cmd *cobra.Command) (*client.Client, string, error) {
	cl := c.client()
	account, _, err := whoami(ctxOf(cmd), cl)
	return cl, account, err
}

// list reads a JSON array field of a decoded object as objects.
func list(m map[string]any, key string) []map[string]any {
	arr, _ := m[key].([]any)
	out := make([]map[string]any, 0, len(arr))
	for _, v := range arr {
		if o, ok := v.(map[string]any); ok {
			out = append(out, o)
		}
	}
	return out
}

func obj(m map[string]any, key string) map[string]any {
	o, _ := m[key].(map[string]any)
	if o == nil {
		return map[string]any{}
	}
	return o
}

// splitRoles reads "Reader,AuthorizationDelegator" into role names.
func splitRoles(s string) []string {
	var out []string
	for _, r := range strings.Split(s, ",") {
		if r = strings.TrimSpace(r); r != "" {
			out = append(out, r)
		}
	}
	return out
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
