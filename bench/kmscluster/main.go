// Command kmscluster measures Key Protect wrap and unwrap over HTTP on real
// `keyline serve` processes, in one run: one node on SQLite, one node on
// PostgreSQL and -nodes nodes sharing that PostgreSQL database (docs/cluster.md),
// with the clients spread evenly over the nodes. Each setting gets a fresh
// database (a schema of its own) and a fresh master key.
//
//	go run ./bench/kmscluster -nodes 3 -duration 5s -workers 16
//	go run ./bench/kmscluster -database-url 'postgres://...'   (an existing database; default: a throwaway PostgreSQL)
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"syscall"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" driver

	"github.com/keyline/keyline/internal/client"
)

func main() {
	nodes := flag.Int("nodes", 3, "nodes sharing PostgreSQL in the cluster setting")
	duration := flag.Duration("duration", 5*time.Second, "how long each measurement runs")
	workers := flag.Int("workers", 16, "concurrent clients, spread over the nodes")
	databaseURL := flag.String("database-url", "", "an existing PostgreSQL database to create throwaway schemas in (default: start a throwaway PostgreSQL)")
	binary := flag.String("keyline", "", "the keyline binary (default: go build ./cmd/keyline)")
	flag.Parse()
	if err := run(*nodes, *workers, *duration, *databaseURL, *binary); err != nil {
		log.Fatal(err)
	}
}

func run(nodes, workers int, d time.Duration, databaseURL, binary string) error {
	if nodes < 1 || workers < 1 {
		return fmt.Errorf("-nodes and -workers must be at least 1")
	}
	dir, err := os.MkdirTemp("", "kmscluster-bench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o711); err != nil { // PostgreSQL's user must reach its directory
		return err
	}
	if binary == "" {
		binary = filepath.Join(dir, "keyline")
		if out, err := exec.Command("go", "build", "-o", binary, "./cmd/keyline").CombinedOutput(); err != nil {
			return fmt.Errorf("go build: %v\n%s", err, out)
		}
	}
	if databaseURL == "" {
		stop, u, err := startPostgres(filepath.Join(dir, "pg"))
		if err != nil {
			return err
		}
		defer stop()
		databaseURL = u
	}
	fmt.Printf("kmscluster bench: %d workers spread over the nodes, %s per run, loopback HTTP\n", workers, d)
	settings := []struct {
		name  string
		nodes int
		pg    bool
	}{{"sqlite", 1, false}, {"postgresql", 1, true}, {"postgresql", nodes, true}}
	for i, s := range settings {
		dbURL := ""
		if s.pg {
			var drop func()
			if dbURL, drop, err = schema(databaseURL, fmt.Sprintf("kmsbench_%d_%d", os.Getpid(), i)); err != nil {
				return err
			}
			defer drop()
		}
		if err := measureSetting(binary, filepath.Join(dir, fmt.Sprint(i)), dbURL, s.name, s.nodes, workers, d); err != nil {
			return fmt.Errorf("%s, %d nodes: %w", s.name, s.nodes, err)
		}
	}
	return nil
}

// startPostgres starts a throwaway PostgreSQL on a Unix socket in dir, as
// scripts/cluster does, and returns how to stop it and the URL of its
// empty database.
func startPostgres(dir string) (stop func(), databaseURL string, err error) {
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

// schema creates a schema in databaseURL's database and returns the URL
// that uses it and how to drop it.
func schema(databaseURL, name string) (string, func(), error) {
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

// measureSetting starts the nodes, makes a root key and measures wrap and
// unwrap with the workers spread over the nodes.
func measureSetting(binary, dir, databaseURL, name string, nodes, workers int, d time.Duration) error {
	apikey := randomHex(16)
	var urls []string
	for i := 1; i <= nodes; i++ {
		u, stop, err := startNode(binary, dir, databaseURL, apikey, i)
		if err != nil {
			return err
		}
		defer stop()
		urls = append(urls, u)
	}
	ctx := context.Background()
	admin := client.New(urls[0], apikey)
	var inst map[string]any
	if err := admin.Do(ctx, client.Request{Method: "POST", Path: "/v2/resource_instances",
		Body: map[string]any{"name": "bench", "resource_id": "kms", "resource_plan_id": "tiered-pricing", "target": "us-south"}}, &inst); err != nil {
		return err
	}
	guid, _ := inst["guid"].(string)
	var keys struct {
		Resources []struct {
			ID string `json:"id"`
		} `json:"resources"`
	}
	if err := admin.Do(ctx, client.Request{Method: "POST", Path: "/api/v2/keys", Header: map[string]string{"bluemix-instance": guid},
		Body: map[string]any{
			"metadata":  map[string]any{"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
			"resources": []any{map[string]any{"type": "application/vnd.ibm.kms.key+json", "name": "bench", "extractable": false}},
		}}, &keys); err != nil || len(keys.Resources) != 1 {
		return fmt.Errorf("create a root key: %v", err)
	}
	token, err := admin.Token(ctx)
	if err != nil {
		return err
	}
	path := "/api/v2/keys/" + keys.Resources[0].ID + "/actions/"
	dek := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	label := fmt.Sprintf("%s nodes=%d", name, nodes)
	wrapped, err := load(label, "wrap", urls, path+"wrap", guid, token, []byte(`{"plaintext":"`+dek+`"}`), workers, d)
	if err != nil {
		return err
	}
	var ct struct {
		Ciphertext string `json:"ciphertext"`
	}
	if err := json.Unmarshal(wrapped, &ct); err != nil || ct.Ciphertext == "" {
		return fmt.Errorf("wrap answered %s", wrapped)
	}
	_, err = load(label, "unwrap", urls, path+"unwrap", guid, token, []byte(`{"ciphertext":"`+ct.Ciphertext+`"}`), workers, d)
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// startNode runs node i of a setting and waits until it is healthy.
func startNode(binary, dir, databaseURL, apikey string, i int) (string, func(), error) {
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
	cmd := exec.Command(binary, "serve", "--data-dir", data, "--listen", addr, "--node-id", fmt.Sprintf("node-%d", i))
	cmd.Env = append(os.Environ(), "KEYLINE_ADMIN_APIKEY="+apikey, "KEYLINE_MASTER_KEY_FILE="+filepath.Join(dir, "master.key"),
		"KEYLINE_DATABASE_URL="+databaseURL)
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

// load runs workers clients for d, worker w on node w mod len(urls), and
// prints throughput and latency; it returns the last answer.
func load(label, name string, urls []string, path, guid, token string, body []byte, workers int, d time.Duration) ([]byte, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      []time.Duration
		firstErr error
		last     []byte
	)
	transport := &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}
	defer transport.CloseIdleConnections()
	hc := &http.Client{Transport: transport}
	start := time.Now()
	deadline := start.Add(d)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			target := urls[w%len(urls)] + path
			var local []time.Duration
			var got []byte
			var err error
			for time.Now().Before(deadline) && err == nil {
				t0 := time.Now()
				req, _ := http.NewRequest(http.MethodPost, target, bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Bluemix-Instance", guid)
				req.Header.Set("Content-Type", "application/vnd.ibm.kms.key_action+json")
				var resp *http.Response
				if resp, err = hc.Do(req); err == nil {
					got, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s: status %d: %s", name, resp.StatusCode, got)
					}
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			defer mu.Unlock()
			lat = append(lat, local...)
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if last == nil {
				last = got
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return nil, firstErr
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(float64(len(lat)-1)*q)].Round(time.Microsecond) }
	fmt.Printf("%-20s %-6s ops=%-8d ops/s=%-8.0f p50=%-10v p99=%v\n", label, name, len(lat), float64(len(lat))/elapsed.Seconds(), p(0.5), p(0.99))
	return last, nil
}
