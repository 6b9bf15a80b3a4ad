package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/server"
	"github.com/spf13/cobra"
)

// newOperatorCmd is the seal of the master key: init, unseal, seal, status.
func newOperatorCmd(c *cli) *cobra.Command {
	cmd := &cobra.Command{Use: "operator", Short: "Seal and unseal the server's master key"}
	cmd.AddCommand(c.operatorInitCmd(), c.operatorUnsealCmd(), c.operatorSealCmd(), c.operatorStatusCmd(),
		c.operatorRotateCmd(), c.operatorRotationStatusCmd(), c.operatorRekeyCmd())
	return cmd
}

func (c *cli) operatorInitCmd() *cobra.Command {
	cfg := server.Config{}
	var shares, threshold int
	cmd := &cobra.Command{
		Use:   "init --key-shares N --key-threshold T [--data-dir DIR] [--database-url URL]",
		Short: "Seal a data directory (new, or a dev one) with Shamir shares of its master key; run it with the server stopped",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if threshold < 2 || shares < threshold || shares > 255 {
				return usageError{fmt.Errorf("want 2 <= --key-threshold <= --key-shares <= 255")}
			}
			cfg.AdminAPIKey = os.Getenv("KEYLINE_ADMIN_APIKEY")
			cfg.MasterKeyFile = os.Getenv("KEYLINE_MASTER_KEY_FILE")
			if v := os.Getenv("KEYLINE_DATABASE_URL"); v != "" && !cmd.Flags().Changed("database-url") {
				cfg.DatabaseURL = v
			}
			res, err := server.Init(ctxOf(cmd), cfg, shares, threshold)
			if err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(map[string]any{"unseal_keys_b64": res.Shares, "unseal_shares": shares,
					"unseal_threshold": threshold, "admin_apikey": res.AdminAPIKey, "migrated": res.Migrated})
			}
			for i, s := range res.Shares {
				fmt.Fprintf(c.out, "Unseal Key %d: %s\n", i+1, s)
			}
			if res.AdminAPIKey != "" {
				fmt.Fprintf(c.out, "\nInitial admin API key: %s\n", res.AdminAPIKey)
			}
			if res.Migrated {
				fmt.Fprintln(c.out, "\nThe dev master key was split into these shares and its file removed: every key and record is kept.")
			}
			fmt.Fprintf(c.out, "\nThese are shown once and stored nowhere. Give each share to a different operator;\n"+
				"after every start, %d of them must run `keyline operator unseal`.\n", threshold)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "./keyline-data", "the data directory to seal")
	f.StringVar(&cfg.DatabaseURL, "database-url", "", "the PostgreSQL database, when the server uses one [$KEYLINE_DATABASE_URL]")
	f.IntVar(&shares, "key-shares", 5, "how many unseal key shares to make")
	f.IntVar(&threshold, "key-threshold", 3, "how many shares unseal the server")
	return cmd
}

func (c *cli) operatorUnsealCmd() *cobra.Command {
	var reset bool
	cmd := &cobra.Command{
		Use:   "unseal [SHARE]",
		Short: "Give one unseal key share (read from standard input when not an argument, to keep it out of process lists)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			share := ""
			if len(args) == 1 {
				share = args[0]
			} else if !reset {
				fmt.Fprint(c.errOut, "Unseal key share: ")
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && err != io.EOF {
					return err
				}
				share = strings.TrimSpace(line)
			}
			st, err := c.client().Unseal(ctxOf(cmd), share, reset)
			if err != nil {
				if st.T > 0 {
					return fmt.Errorf("%w; progress %d of %d", err, st.Progress, st.T)
				}
				return err
			}
			return c.printSealStatus(st)
		},
	}
	cmd.Flags().BoolVar(&reset, "reset", false, "discard the shares given so far")
	return cmd
}

func (c *cli) operatorSealCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "seal",
		Short: "Seal the server now: every service stops, connections close, the master key leaves memory (audited)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := c.client().Seal(ctxOf(cmd))
			if err != nil {
				return err
			}
			return c.printSealStatus(st)
		},
	}
}

func (c *cli) operatorStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "seal-status",
		Short: "Show whether the server is sealed and the unseal progress",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := c.client().SealStatus(ctxOf(cmd))
			if err != nil {
				return err
			}
			return c.printSealStatus(st)
		},
	}
}

func (c *cli) printSealStatus(st client.SealStatus) error {
	if c.output == "json" {
		return c.printJSON(st)
	}
	c.fields([2]string{"Seal Type", st.Type}, [2]string{"Sealed", fmt.Sprint(st.Sealed)},
		[2]string{"Threshold", fmt.Sprint(st.T)}, [2]string{"Total Shares", fmt.Sprint(st.N)},
		[2]string{"Unseal Progress", fmt.Sprintf("%d/%d", st.Progress, st.T)})
	return nil
}
