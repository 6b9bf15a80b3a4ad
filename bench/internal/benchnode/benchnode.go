// Package benchnode runs what the cluster benchmarks measure: a throwaway
// PostgreSQL, schemas in it, and `keyline serve` processes.
package benchnode

import (
	"database/sql"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver
)

// Build compiles cmd/keyline into dir and returns the binary's path.
func Build(dir string) (string, error) {
	bin := filepath.Join(dir, "keyline")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/keyline/keyline/cmd/keyline").CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
}

// StartPostgres starts a throwaway PostgreSQL on a Unix socket in dir, as
// scripts/cluster does, and returns how to stop it and the URL of its
// empty database.
func StartPostgres(dir string) (stop func(), databaseURL string, err error) {
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Strings(bins)
	if len(bins) == 0 {
		return nil, "", fmt.Errorf("PostgreSQL is not installed: give -database-url")
	}
	bin := bins[len(bins)-1]
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, "", err
	}
	var asPG []string
	if os.Getuid() == 0 {
		if err := exec.Command("chown", "postgres", dir).Run(); err != nil {
			return nil, "", err
		}
		asPG = []string{"runuser", "-u", "postgres", "--"} // PostgreSQL refuses to run as root
	}
	pg := func(name string, args ...string) error {
		argv := append(append(slices.Clone(asPG), filepath.Join(bin, name)), args...)
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%s: %v\n%s", name, err, out)
		}
		return nil
	}
	if err := pg("initdb", "-D", dir+"/data", "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"); err != nil {
		return nil, "", err
	}
	if err := pg("pg_ctl", "-D", dir+"/data", "-l", dir+"/server.log", "-w", "-o",
		"-p 55433 -k "+dir+" -c listen_addresses= -c fsync=off -c max_connections=200", "start"); err != nil {
		return nil, "", err
	}
	stop = func() { pg("pg_ctl", "-D", dir+"/data", "-m", "immediate", "stop") }
	if err := pg("psql", "-q", "-h", dir, "-p", "55433", "-U", "postgres", "-d", "postgres",
		"-c", "CREATE ROLE keyline LOGIN", "-c", "CREATE DATABASE keyline OWNER keyline"); err != nil {
		stop()
		return nil, "", err
	}
	return stop, "postgres://keyline@/keyline?host=" + url.QueryEscape(dir) + "&port=55433", nil
}

// Schema creates a schema in databaseURL's database and returns the URL
// that uses it and how to drop it.
func Schema(databaseURL, name string) (string, func(), error) {
	db, err := sql.Open("pgx", databaseURL)
	if err != nil {
		return "", nil, err
	}
	if _, err := db.Exec(`CREATE SCHEMA ` + name); err != nil {
		db.Close()
		return "", nil, err
	}
	u, err := url.Parse(databaseURL)
	if err != nil {
		db.Close()
		return "", nil, err
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String(), func() { db.Exec(`DROP SCHEMA ` + name + ` CASCADE`); db.Close() }, nil
}

// StartNode runs `keyline serve` as node i of a setting on dir/node-<i>
// (its log beside it), with the admin API key apikey, the master key file
// dir/master.key shared by the setting's nodes, the metadata in
// databaseURL ("" for SQLite) and more arguments and environment, and
// waits until it is healthy. It returns the node's URL and how to stop it.
func StartNode(binary, dir, databaseURL, apikey string, i int, args, env []string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	data := filepath.Join(dir, fmt.Sprintf("node-%d", i))
	if err := os.MkdirAll(data, 0o700); err != nil {
		return "", nil, err
	}
	logFile, err := os.Create(data + ".log")
	if err != nil {
		return "", nil, err
	}
	cmd := exec.Command(binary, append([]string{"serve", "--data-dir", data, "--listen", addr, "--node-id", fmt.Sprintf("node-%d", i)}, args...)...)
	cmd.Env = append(append(os.Environ(), "KEYLINE_ADMIN_APIKEY="+apikey, "KEYLINE_MASTER_KEY_FILE="+filepath.Join(dir, "master.key"),
		"KEYLINE_DATABASE_URL="+databaseURL), env...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return "", nil, err
	}
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logFile.Close()
	}
	base := "http://" + addr
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get(base + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return base, stop, nil
			}
		}
	}
	stop()
	out, _ := os.ReadFile(data + ".log")
	return "", nil, fmt.Errorf("node %d did not start:\n%s", i, out)
}
