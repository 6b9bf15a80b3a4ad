package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/spf13/cobra"
)

func (c *cli) operatorRotateCmd() *cobra.Command {
	var noWait bool
	cmd := &cobra.Command{
		Use:   "rotate-master-key [--no-wait]",
		Short: "Re-seal all key material under a new master key while the server keeps serving; waits with a progress bar (audited)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cl := c.client()
			st, err := cl.RotateMasterKey(ctxOf(cmd))
			for err == nil && !noWait && st.State == "running" {
				if c.output != "json" {
					fmt.Fprintf(c.errOut, "\r%s re-sealing under master key version %d (%d/%d)", progressBar(st.ProgressPercent, 30), st.ToVersion, st.Done, st.Total)
				}
				select {
				case <-ctxOf(cmd).Done():
					return ctxOf(cmd).Err()
				case <-time.After(300 * time.Millisecond):
				}
				st, err = cl.MasterKeyRotation(ctxOf(cmd))
			}
			if c.output != "json" && !noWait {
				fmt.Fprintf(c.errOut, "\r%s re-sealing under master key version %d (%d/%d)\n", progressBar(st.ProgressPercent, 30), st.ToVersion, st.Done, st.Total)
			}
			if err != nil {
				return err
			}
			if st.State == "failed" {
				return fmt.Errorf("the master key rotation failed: %s; run the command again to resume it", st.Reason)
			}
			return c.printRotation(st)
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "return once the rotation started (keyline operator rotation-status follows it)")
	return cmd
}

func (c *cli) printRotation(st client.RotationStatus) error {
	if c.output == "json" {
		return c.printJSON(st)
	}
	c.fields([2]string{"State", st.State}, [2]string{"Master Key Version", fmt.Sprint(st.ToVersion)},
		[2]string{"Re-sealed", fmt.Sprintf("%d/%d", st.Done, st.Total)}, [2]string{"Keyring Versions", fmt.Sprint(st.KeyVersions)})
	return nil
}

func (c *cli) operatorRekeyCmd() *cobra.Command {
	var shares, threshold int
	cmd := &cobra.Command{
		Use: "rekey --key-shares N --key-threshold T",
		Short: "Replace the unseal key shares: give the threshold of current shares on standard input, one a line; " +
			"the old shares stop working (audited). Under a pkcs11 or kms seal: a new unseal key, wrapped by the same key",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if threshold < 2 || shares < threshold || shares > 255 {
				return usageError{fmt.Errorf("want 2 <= --key-threshold <= --key-shares <= 255")}
			}
			cl := c.client()
			st, err := cl.SealStatus(ctxOf(cmd))
			if err != nil {
				return err
			}
			if st.Type == "pkcs11" || st.Type == "kms" {
				// No shares: the same HSM or KMS key wraps a new unseal key.
				if _, err := cl.Rekey(ctxOf(cmd), nil, 0, 0); err != nil {
					return err
				}
				if c.output == "json" {
					return c.printJSON(map[string]any{"seal": st.Type, "rewrapped": true})
				}
				fmt.Fprintf(c.out, "A new unseal key seals the keyring, wrapped by the same %s key; the previous wrapped key opens nothing.\n", st.Type)
				return nil
			}
			in := bufio.NewReader(cmd.InOrStdin())
			var current []string
			for len(current) < st.T {
				fmt.Fprintf(c.errOut, "Current unseal key share (%d of %d): ", len(current)+1, st.T)
				line, err := in.ReadString('\n')
				if line = strings.TrimSpace(line); line != "" {
					current = append(current, line)
				}
				if errors.Is(err, io.EOF) {
					break
				} else if err != nil {
					return err
				}
			}
			if st.T > 0 {
				fmt.Fprintln(c.errOut)
			}
			keys, err := cl.Rekey(ctxOf(cmd), current, shares, threshold)
			if err != nil {
				return err
			}
			if c.output == "json" {
				return c.printJSON(map[string]any{"unseal_keys_b64": keys, "unseal_shares": shares, "unseal_threshold": threshold})
			}
			for i, s := range keys {
				fmt.Fprintf(c.out, "Unseal Key %d: %s\n", i+1, s)
			}
			fmt.Fprintf(c.out, "\nThese are shown once and stored nowhere; the previous shares no longer open this Keyline.\n"+
				"After every start, %d of them must run `keyline operator unseal`.\n", threshold)
			return nil
		},
	}
	cmd.Flags().IntVar(&shares, "key-shares", 5, "how many new unseal key shares to make")
	cmd.Flags().IntVar(&threshold, "key-threshold", 3, "how many new shares unseal the server")
	return cmd
}

func (c *cli) operatorRotationStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "rotation-status",
		Short: "Show the last master key rotation's progress and the keyring's versions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := c.client().MasterKeyRotation(ctxOf(cmd))
			if err != nil {
				return err
			}
			return c.printRotation(st)
		},
	}
}
