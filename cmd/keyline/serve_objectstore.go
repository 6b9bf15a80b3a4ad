package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/server"
	"github.com/keyline/keyline/internal/streams/objlog"
)

// objectStoreFromEnv completes --object-store from the environment and
// reads its credentials: from --object-store-credentials, else from
// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. They are never printed.
func objectStoreFromEnv(cmd *cobra.Command, cfg *server.Config, credsFile string) error {
	if v := os.Getenv("KEYLINE_OBJECT_STORE"); v != "" && !cmd.Flags().Changed("object-store") {
		cfg.ObjectStore = v
	}
	if cfg.ObjectStore == "" {
		if credsFile != "" {
			return usageError{fmt.Errorf("--object-store-credentials needs --object-store")}
		}
		return nil
	}
	if _, err := objlog.ParseURL(cfg.ObjectStore); err != nil {
		return usageError{fmt.Errorf("--object-store: %s", errs.As(err).Msg)}
	}
	if cfg.DatabaseURL == "" && os.Getenv("KEYLINE_DATABASE_URL") == "" {
		return usageError{fmt.Errorf("--object-store needs --database-url postgres://... (the index of the objects is kept there, shared by the nodes)")}
	}
	cfg.ObjectStoreAccessKey, cfg.ObjectStoreSecretKey = os.Getenv("AWS_ACCESS_KEY_ID"), os.Getenv("AWS_SECRET_ACCESS_KEY")
	if credsFile != "" {
		fi, err := os.Stat(credsFile)
		if err != nil {
			return fmt.Errorf("--object-store-credentials: %w", err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return usageError{fmt.Errorf("--object-store-credentials %s is readable by others: chmod 600 it", credsFile)}
		}
		b, err := os.ReadFile(credsFile)
		if err != nil {
			return fmt.Errorf("--object-store-credentials: %w", err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) != 2 || strings.TrimSpace(lines[0]) == "" || strings.TrimSpace(lines[1]) == "" {
			return usageError{fmt.Errorf("--object-store-credentials %s must hold two lines: the access key ID, then the secret key", credsFile)}
		}
		cfg.ObjectStoreAccessKey, cfg.ObjectStoreSecretKey = strings.TrimSpace(lines[0]), strings.TrimSpace(lines[1])
	}
	if cfg.ObjectStoreAccessKey == "" || cfg.ObjectStoreSecretKey == "" {
		return usageError{fmt.Errorf("--object-store needs credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give --object-store-credentials FILE")}
	}
	return nil
}
