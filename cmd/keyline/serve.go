package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/keyline/keyline/internal/server"
	"github.com/spf13/cobra"
)

func newServeCmd(c *cli) *cobra.Command {
	cfg := server.Config{}
	cmd := &cobra.Command{
		Use:   "serve [--data-dir DIR] [--listen ADDR]",
		Short: "Run every Keyline service in this process on embedded storage",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg.AdminAPIKey = os.Getenv("KEYLINE_ADMIN_APIKEY")
			cfg.MasterKeyFile = os.Getenv("KEYLINE_MASTER_KEY_FILE")
			cfg.Logger = slog.New(slog.NewTextHandler(c.errOut, nil))
			s, err := server.New(ctxOf(cmd), cfg)
			if err != nil {
				return err
			}
			defer s.Close()
			if err := s.Listen(); err != nil {
				return err
			}
			keyFile := filepath.Join(cfg.DataDir, "admin-apikey")
			if s.AdminAPIKey != "" {
				fmt.Fprintf(c.out, "Created the admin API key (shown once; also in %s, mode 0600):\n  %s\n", keyFile, s.AdminAPIKey)
			}
			login := fmt.Sprintf("--apikey \"$(cat %s)\"", keyFile)
			if cfg.AdminAPIKey != "" {
				login = "--apikey \"$KEYLINE_ADMIN_APIKEY\""
			} else if _, err := os.Stat(keyFile); err != nil {
				login = "--apikey <your admin API key>"
			}
			fmt.Fprintf(c.out, "Keyline is serving on %s\n  keyline login -a %s %s\n", s.URL(), s.URL(), login)
			return s.Serve(ctxOf(cmd))
		},
	}
	cmd.Flags().StringVar(&cfg.DataDir, "data-dir", "./keyline-data", "where Keyline keeps its data")
	cmd.Flags().StringVar(&cfg.Listen, "listen", "127.0.0.1:8080", "the HTTP address of every API")
	return cmd
}
