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
	cmd.AddCommand(c.operatorInitCmd(), c.operatorMigrateCmd(), c.operatorUnsealCmd(), c.operatorSealCmd(), c.operatorStatusCmd(),
		c.operatorRotateCmd(), c.operatorRotationStatusCmd(), c.operatorRekeyCmd())
	return cmd
}

func (c *cli) operatorInitCmd() *cobra.Command {
	cfg := server.Config{}
	var seal sealTargetFlags
	cmd := &cobra.Command{
		Use:   "init [--seal shamir|pkcs11|kms] [--data-dir DIR] [--database-url URL]",
		Short: "Seal a data directory (new, or a dev one) with Shamir shares of its master key, an HSM key (pkcs11) or a Key Protect root key (kms); run it with the server stopped",
		Args:  cobra.NoArgs,
		RunE: c.runInitSeal(&cfg, &seal, func(cmd *cobra.Command, st server.SealStatus) ([]string, error) {
			if st.Type != "" && st.Type != server.SealDev {
				return nil, usageError{fmt.Errorf("this data directory is sealed with %s already: to move it to another seal, use `keyline operator migrate`", st.Type)}
			}
			return nil, nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "./keyline-data", "the data directory to seal")
	f.StringVar(&cfg.DatabaseURL, "database-url", "", "the PostgreSQL database, when the server uses one [$KEYLINE_DATABASE_URL]")
	seal.register(f)
	return cmd
}

// operatorMigrateCmd moves a sealed data directory to another seal,
// keeping its master key and so every key and record.
func (c *cli) operatorMigrateCmd() *cobra.Command {
	cfg := server.Config{}
	var seal sealTargetFlags
	var from unsealSecretFlags
	cmd := &cobra.Command{
		Use:   "migrate --seal shamir|pkcs11|kms [--data-dir DIR] [--database-url URL] < shares",
		Short: "Move a sealed data directory to another seal, keeping every key and record; from shamir, the threshold of unseal key shares is read from standard input, one per line; run it with the server stopped",
		Args:  cobra.NoArgs,
		RunE: c.runInitSeal(&cfg, &seal, func(cmd *cobra.Command, st server.SealStatus) (shares []string, err error) {
			if cfg.Unseal, err = from.secrets(); err != nil || st.Type != server.SealShamir {
				return nil, err
			}
			fmt.Fprintf(c.errOut, "Give %d unseal key shares, one per line:\n", st.T)
			sc := bufio.NewScanner(cmd.InOrStdin())
			for len(shares) < st.T && sc.Scan() {
				if line := strings.TrimSpace(sc.Text()); line != "" {
					shares = append(shares, line)
				}
			}
			return shares, sc.Err()
		}),
	}
	f := cmd.Flags()
	f.StringVar(&cfg.DataDir, "data-dir", "./keyline-data", "the data directory to move")
	f.StringVar(&cfg.DatabaseURL, "database-url", "", "the PostgreSQL database, when the server uses one [$KEYLINE_DATABASE_URL]")
	seal.register(f)
	from.register(f, "from-", "the current")
	return cmd
}

// runInitSeal is init and migrate: the seal asked for, the directory's
// seal now, what the verb needs of it (the current shares), then the
// (re)seal.
func (c *cli) runInitSeal(cfg *server.Config, seal *sealTargetFlags, prepare func(*cobra.Command, server.SealStatus) ([]string, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		target, err := seal.target(cmd.Flags())
		if err != nil {
			return err
		}
		cfg.AdminAPIKey = os.Getenv("KEYLINE_ADMIN_APIKEY")
		cfg.MasterKeyFile = os.Getenv("KEYLINE_MASTER_KEY_FILE")
		if v := os.Getenv("KEYLINE_DATABASE_URL"); v != "" && !cmd.Flags().Changed("database-url") {
			cfg.DatabaseURL = v
		}
		st, err := server.ReadSealMode(ctxOf(cmd), *cfg)
		if err != nil {
			return err
		}
		shares, err := prepare(cmd, st)
		if err != nil {
			return err
		}
		res, err := server.InitSeal(ctxOf(cmd), *cfg, target, shares)
		if err != nil {
			return err
		}
		return c.printInit(target, res)
	}
}

func (c *cli) printInit(target server.SealTarget, res server.InitResult) error {
	if c.output == "json" {
		return c.printJSON(map[string]any{"seal": target.Mode, "unseal_keys_b64": res.Shares, "unseal_shares": len(res.Shares),
			"unseal_threshold": target.Threshold, "admin_apikey": res.AdminAPIKey, "migrated": res.Migrated, "migrated_from": res.From})
	}
	for i, s := range res.Shares {
		fmt.Fprintf(c.out, "Unseal Key %d: %s\n", i+1, s)
	}
	if res.AdminAPIKey != "" {
		fmt.Fprintf(c.out, "\nInitial admin API key: %s\n", res.AdminAPIKey)
	}
	if res.Migrated {
		fmt.Fprintf(c.out, "\nThe master keys of the %s seal are kept under the %s seal: every key and record is kept.\n", res.From, target.Mode)
		if res.From == server.SealDev {
			fmt.Fprintln(c.out, "The dev master key file was removed.")
		}
	}
	if target.Mode != server.SealShamir {
		fmt.Fprintf(c.out, "\nThe unseal key (which seals the master keys) is wrapped by the %s key; `keyline serve` unseals itself at start with the same\n"+
			"--pkcs11-pin-file/KEYLINE_PKCS11_PIN or --kms-api-key-file/KEYLINE_KMS_API_KEY.\n", target.Mode)
		return nil
	}
	fmt.Fprintf(c.out, "\nThese are shown once and stored nowhere. Give each share to a different operator;\n"+
		"after every start, %d of them must run `keyline operator unseal`.\n", target.Threshold)
	return nil
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
