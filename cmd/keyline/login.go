package main

import (
	"path/filepath"

	"github.com/spf13/cobra"
)

func newLoginCmd(c *cli) *cobra.Command {
	var apikey, cacert string
	cmd := &cobra.Command{
		Use:   "login --apikey KEY [-a URL] [--cacert FILE]",
		Short: "Log in with an API key (remembered in ~/.keyline/config.json, mode 0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if apikey == "" {
				return usageError{errorf("--apikey is required (the admin key is in <data-dir>/admin-apikey)")}
			}
			if cacert != "" {
				// Later commands run from anywhere: remember where the file is.
				abs, err := filepath.Abs(cacert)
				if err != nil {
					return err
				}
				cacert = abs
			}
			cl := c.client()
			cl.APIKey = apikey
			cl.HTTP.Transport = transport(cacert)
			if _, err := cl.Token(ctxOf(cmd)); err != nil {
				return err
			}
			var details map[string]any
			if err := cl.Do(ctxOf(cmd), clientReq("GET", "/v1/apikeys/details", map[string]string{"IAM-ApiKey": apikey}), &details); err != nil {
				return err
			}
			if err := saveConfig(config{Endpoint: cl.BaseURL, APIKey: apikey, CACert: cacert}); err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(details)
			}
			c.ok("")
			c.fields([2]string{"API endpoint", cl.BaseURL}, [2]string{"Account", str(details, "account_id")}, [2]string{"User", str(details, "iam_id")})
			return nil
		},
	}
	cmd.Flags().StringVar(&apikey, "apikey", "", "API key")
	cmd.Flags().StringVar(&cacert, "cacert", "", "PEM file of the CA that signed the server's certificate, trusted besides the system's (remembered)")
	return cmd
}
