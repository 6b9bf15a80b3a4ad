// Package storetest opens metadata databases for tests: SQLite in a
// temporary directory by default, or, when KEYLINE_TEST_DATABASE_URL names a
// PostgreSQL database, a fresh schema of it per test, so the same suites
// run on both backends and tests never see each other's rows.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver

	"github.com/keyline/keyline/internal/store"
)

// EnvURL names the environment variable holding the PostgreSQL URL the
// tests use; unset, tests use SQLite.
const EnvURL = "KEYLINE_TEST_DATABASE_URL"

// URL returns the database URL for a test's own, empty database: "" (SQLite)
// when KEYLINE_TEST_DATABASE_URL is unset, else the URL of a new schema that
// is dropped when the test ends. Open it as often as needed (restarts).
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvURL)
	if base == "" {
		return ""
	}
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s is not a URL", EnvURL)
	}
	var b [8]byte
	rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("open %s: %v", u.Redacted(), err)
	}
	ctx := context.Background()
	if _, err := admin.ExecContext(ctx, `CREATE SCHEMA `+schema); err != nil {
		admin.Close()
		t.Fatalf("create schema in %s: %v", u.Redacted(), err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, `DROP SCHEMA `+schema+` CASCADE`); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Open opens a test's own, empty database (see URL), closed when the test
// ends.
func Open(t testing.TB) *store.DB {
	t.Helper()
	return OpenAt(t, t.TempDir(), URL(t))
}

// OpenAt opens the database in dir (SQLite) or at databaseURL, closed when
// the test ends: for tests that reopen the same database.
func OpenAt(t testing.TB, dir, databaseURL string) *store.DB {
	t.Helper()
	db, err := store.Open(context.Background(), dir, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
