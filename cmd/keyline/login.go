package main

import (
	"github.com/spf13/cobra"
)

func newLoginCmd(c *cli) *cobra.Command {
	var apikey string
	cmd := &cobra.Command{
		Use:   "login --apikey KEY [-a URL]",
		Short: "Log in with an API key (remembered in ~/.keyline/config.json, mode 0600)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if apikey == "" {
				return usageError{errorf("--apikey is required (the admin key is in <data-dir>/admin-apikey)")}
			}
			cl := c.client()
			cl.APIKey = apikey
			if _, err := cl.Token(ctxOf(cmd)); err != nil {
				return err
			}
			var details map[string]any
			if err := cl.Do(ctxOf(cmd), clientReq("GET", "/v1/apikeys/details", map[string]string{"IAM-ApiKey": apikey}), &details); err != nil {
				return err
			}
			if err := saveConfig(config{Endpoint: cl.BaseURL, APIKey: apikey}); err != nil {
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
	return cmd
}
