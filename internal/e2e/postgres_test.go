package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/server"
	"github.com/keyline/keyline/internal/store/storetest"
)

// TestKeysSurviveARestartOnPostgreSQL keeps the metadata in PostgreSQL,
// wraps with a new root key, restarts Keyline on the same database and
// unwraps again: nothing of the metadata was in the data directory.
func TestKeysSurviveARestartOnPostgreSQL(t *testing.T) {
	databaseURL := storetest.URL(t)
	if databaseURL == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set")
	}
	dir := t.TempDir()
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	onPostgres := func(c *server.Config) { c.DatabaseURL = databaseURL }
	const plaintext = "c2VjcmV0LWRhdGEta2V5LTAxMjM0NTY3ODlhYmNkZWY="
	var guid, keyID, ciphertext string
	// The first Keyline lives in a subtest, whose end stops it.
	t.Run("before the restart", func(t *testing.T) {
		e := startIn(t, dir, clk, onPostgres)
		admin := e.as(e.admin)
		guid = admin.createInstance("pg-kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
		keyID, _ = admin.createRootKey(guid, "pg-root")
		out := admin.must("POST", client.Path("api", "v2", "keys", keyID, "actions", "wrap"), kpHeader(guid), map[string]any{"plaintext": plaintext})
		ciphertext = out["ciphertext"].(string)
	})
	if t.Failed() {
		return
	}
	e := startIn(t, dir, clk, onPostgres)
	admin := e.as(e.admin)
	out := admin.must("POST", client.Path("api", "v2", "keys", keyID, "actions", "unwrap"), kpHeader(guid), map[string]any{"ciphertext": ciphertext})
	if out["plaintext"] != plaintext {
		t.Fatalf("unwrap after the restart = %v, want the wrapped plaintext", out["plaintext"])
	}
	if _, err := os.Stat(filepath.Join(dir, "keyline.db")); !os.IsNotExist(err) {
		t.Fatalf("a SQLite database is in the data directory (stat: %v): the metadata did not go to PostgreSQL", err)
	}
}

// TestServeRefusesABadDatabaseURLWithoutShowingThePassword starts `keyline
// serve` with a database URL it cannot use, from the flag and from the
// environment: it must exit with a clear error that never shows the password.
func TestServeRefusesABadDatabaseURLWithoutShowingThePassword(t *testing.T) {
	for _, c := range []struct {
		name      string
		args, env []string
		want      string
	}{
		{"not postgres", []string{"--database-url", "mysql://keyline:s3cret-pw@db/keyline"}, nil, "postgres://"},
		{"unreachable", nil, []string{"KEYLINE_DATABASE_URL=postgres://keyline:s3cret-pw@127.0.0.1:1/keyline?connect_timeout=5"}, "127.0.0.1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(binary(t), append([]string{"serve", "--data-dir", t.TempDir(), "--listen", "127.0.0.1:0"}, c.args...)...)
			cmd.Env = append(os.Environ(), c.env...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("serve started with an unusable database URL:\n%s", out)
			}
			if strings.Contains(string(out), "s3cret-pw") {
				t.Errorf("the output shows the database password:\n%s", out)
			}
			if !strings.Contains(string(out), c.want) {
				t.Errorf("the output does not say what is wrong (want %q):\n%s", c.want, out)
			}
		})
	}
}
