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
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/keyline/keyline/bench/internal/benchnode"
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
		if binary, err = benchnode.Build(dir); err != nil {
			return err
		}
	}
	if databaseURL == "" {
		stop, u, err := benchnode.StartPostgres(filepath.Join(dir, "pg"))
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
			if dbURL, drop, err = benchnode.Schema(databaseURL, fmt.Sprintf("kmsbench_%d_%d", os.Getpid(), i)); err != nil {
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

// measureSetting starts the nodes, makes a root key and measures wrap and
// unwrap with the workers spread over the nodes.
func measureSetting(binary, dir, databaseURL, name string, nodes, workers int, d time.Duration) error {
	apikey := randomHex(16)
	var urls []string
	for i := 1; i <= nodes; i++ {
		u, stop, err := benchnode.StartNode(binary, dir, databaseURL, apikey, i, nil, nil)
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
