// Command masterkey measures an online master key rotation: it seals a
// fresh data directory with Shamir shares, unseals it, creates root keys
// (each a key version sealed by the master key), and times
// `rotate-master-key` from the call until the old key is dropped, with and
// without a wrap load running.
//
//	go run ./bench/masterkey -keys 2000
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/server"
)

const adminKey = "bench-admin-api-key-0123456789abcdef"

func main() {
	keys := flag.Int("keys", 2000, "root keys to create before rotating")
	batch := flag.Int("batch", 0, "rows per re-seal transaction (0: the server's default)")
	workers := flag.Int("wrappers", 4, "concurrent wrap callers during the loaded rotation")
	flag.Parse()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir, err := os.MkdirTemp("", "keyline-bench-masterkey-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	res, err := server.Init(ctx, server.Config{DataDir: dir, AdminAPIKey: adminKey, Logger: quiet}, 3, 2)
	if err != nil {
		log.Fatal(err)
	}
	srv, err := server.New(ctx, server.Config{DataDir: dir, Listen: "127.0.0.1:0", AdminAPIKey: adminKey, Logger: quiet, MasterRotationBatch: *batch})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	go srv.Serve(ctx)
	c := client.New(srv.URL(), adminKey)
	for _, s := range res.Shares[:2] {
		if _, err := c.Unseal(ctx, s, false); err != nil {
			log.Fatal(err)
		}
	}
	var inst map[string]any
	if err := c.Do(ctx, client.Request{Method: "POST", Path: "/v2/resource_instances", Body: map[string]any{
		"name": "bench-kp", "resource_id": "kms", "resource_plan_id": "tiered-pricing", "target": "us-south"}}, &inst); err != nil {
		log.Fatal(err)
	}
	guid := inst["guid"].(string)
	header := map[string]string{"bluemix-instance": guid}
	began := time.Now()
	ids := make(chan string, *keys)
	var wg sync.WaitGroup
	var next atomic.Int64
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(*keys); i = next.Add(1) {
				var out map[string]any
				body := map[string]any{"metadata": map[string]any{"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
					"resources": []any{map[string]any{"type": "application/vnd.ibm.kms.key+json", "name": fmt.Sprintf("k%d", i), "extractable": false}}}
				if err := c.Do(ctx, client.Request{Method: "POST", Path: "/api/v2/keys", Header: header, Body: body}, &out); err != nil {
					log.Fatal(err)
				}
				ids <- out["resources"].([]any)[0].(map[string]any)["id"].(string)
			}
		}()
	}
	wg.Wait()
	close(ids)
	keyID := <-ids
	fmt.Printf("GOMAXPROCS=%d, %d root keys created in %v\n", runtime.GOMAXPROCS(0), *keys, time.Since(began).Round(time.Millisecond))

	rotate := func(label string) {
		began := time.Now()
		st, err := c.RotateMasterKey(ctx)
		for err == nil && st.State == "running" {
			time.Sleep(20 * time.Millisecond)
			st, err = c.MasterKeyRotation(ctx)
		}
		took := time.Since(began)
		if err != nil || st.State != "completed" {
			log.Fatalf("rotation: %+v %v", st, err)
		}
		fmt.Printf("%-28s %6d values re-sealed to version %d in %8v (%.0f values/s)\n", label, st.Total, st.ToVersion,
			took.Round(time.Millisecond), float64(st.Total)/took.Seconds())
	}
	rotate("rotation, idle:")

	stop := make(chan struct{})
	var calls, failed atomic.Int64
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				calls.Add(1)
				if err := c.Do(ctx, client.Request{Method: "POST", Path: "/api/v2/keys/" + keyID + "/actions/wrap", Header: header,
					Body: map[string]any{"plaintext": "c2VjcmV0LWRhdGEta2V5LTAxMjM0NTY3ODlhYmNkZWY="}}, nil); err != nil {
					failed.Add(1)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	base := calls.Load()
	time.Sleep(time.Second)
	fmt.Printf("wraps without a rotation: %d/s\n", calls.Load()-base)
	before := calls.Load()
	began = time.Now()
	rotate(fmt.Sprintf("rotation, %d wrappers:", *workers))
	rate := float64(calls.Load()-before) / time.Since(began).Seconds()
	close(stop)
	wg.Wait()
	fmt.Printf("wraps during the loaded rotation: %.0f/s, %d failed of %d\n", rate, failed.Load(), calls.Load())
}
