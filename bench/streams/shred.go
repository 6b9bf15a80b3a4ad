package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/server"
)

const adminKey = "bench-admin-api-key-0123456789abcdefghijklmnopqrst"

// shred runs a whole Keyline, provisions a deployment with a Key Protect
// root key, keeps consumers reading, force-deletes the key and measures the
// time until every consumer's connection is closed.
func (b *bench) shred() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := server.New(ctx, server.Config{DataDir: b.tmp + "/keyline", Listen: "127.0.0.1:0", AdminAPIKey: adminKey,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ctx) }()
	defer func() { cancel(); <-done; srv.Close() }()

	d := provision(ctx, client.New(srv.URL(), adminKey), "es")
	t := d.target
	t.createTopic("shred", 6)
	prod := t.client(kgo.DefaultProduceTopic("shred"))
	vals := values(1024)
	for i := range 20_000 {
		prod.Produce(ctx, &kgo.Record{Value: vals[i%len(vals)]}, nil)
	}
	if err := prod.Flush(ctx); err != nil {
		fatal(err)
	}
	prod.Close()

	// Consumers read in a loop; each notes when its connections close.
	const consumers = 8
	var mu sync.Mutex
	var deleteAt time.Time
	cutAt := make([]time.Time, consumers)
	connected := make([]int, consumers)
	var wg sync.WaitGroup
	cctx, stopConsumers := context.WithCancel(ctx)
	for i := range consumers {
		h := &connHook{onConnect: func() { mu.Lock(); connected[i]++; mu.Unlock() },
			onDisconnect: func() {
				mu.Lock()
				if !deleteAt.IsZero() && cutAt[i].IsZero() {
					cutAt[i] = time.Now()
				}
				mu.Unlock()
			}}
		cl := t.client(kgo.ConsumeTopics("shred"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.WithHooks(h),
			kgo.FetchMaxBytes(256<<10))
		wg.Go(func() {
			defer cl.Close()
			for cctx.Err() == nil {
				cl.PollFetches(cctx)
			}
		})
	}
	time.Sleep(500 * time.Millisecond) // every consumer is connected and reading
	mu.Lock()
	deleteAt = time.Now()
	mu.Unlock()
	d.call("DELETE", client.Path("api", "v2", "keys", d.keyID)+"?force=true", d.kpHeader, nil)
	apiDone := time.Since(deleteAt)
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		all := true
		var last time.Time
		for _, at := range cutAt {
			if at.IsZero() {
				all = false
			} else if at.After(last) {
				last = at
			}
		}
		mu.Unlock()
		if all {
			fmt.Printf("== shredding: force delete of the key -> all %d consumers' connections closed in %v (the DELETE call itself returned after %v) ==\n",
				consumers, last.Sub(deleteAt).Round(time.Millisecond), apiDone.Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			fmt.Println("== shredding: some consumers were still connected 10 s after the force delete ==")
			break
		}
		time.Sleep(time.Millisecond)
	}
	stopConsumers()
	wg.Wait()
}

// connHook tells when a client's broker connections open and close.
type connHook struct{ onConnect, onDisconnect func() }

func (h *connHook) OnBrokerConnect(_ kgo.BrokerMetadata, _ time.Duration, _ net.Conn, err error) {
	if err == nil {
		h.onConnect()
	}
}

func (h *connHook) OnBrokerDisconnect(kgo.BrokerMetadata, net.Conn) { h.onDisconnect() }

// deployment is an Event Streams deployment provisioned through the APIs
// of a running Keyline, with a Manager's credentials.
type deployment struct {
	call     func(method, path string, header map[string]string, body any) map[string]any
	kpHeader map[string]string // names the Key Protect instance of its root key
	keyID    string            // of the root key
	guid     string            // of the deployment
	target   *target           // every broker of kafka_brokers_sasl, logged in as the Manager
}

// provision makes a Key Protect instance and root key, lets messagehub use
// it, and provisions a deployment named name encrypted with it.
func provision(ctx context.Context, c *client.Client, name string) *deployment {
	d := &deployment{call: func(method, path string, header map[string]string, body any) map[string]any {
		var out map[string]any
		if err := c.Do(ctx, client.Request{Method: method, Path: path, Header: header, Body: body}, &out); err != nil {
			fatalf("%s %s: %v", method, path, err)
		}
		return out
	}}
	call := d.call
	details := call("GET", "/v1/apikeys/details", map[string]string{"IAM-ApiKey": c.APIKey}, nil)
	account := details["account_id"].(string)
	kp := call("POST", "/v2/resource_instances", nil, map[string]any{"name": name + "-kp", "resource_id": "kms", "resource_plan_id": "tiered-pricing", "target": "us-south"})
	kpGUID := kp["guid"].(string)
	d.kpHeader = map[string]string{"bluemix-instance": kpGUID}
	call("POST", "/v1/policies", nil, map[string]any{
		"type":     "authorization",
		"subjects": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": account}, map[string]any{"name": "serviceName", "value": "messagehub"}}}},
		"roles":    []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Reader"}},
		"resources": []any{map[string]any{"attributes": []any{
			map[string]any{"name": "accountId", "operator": "stringEquals", "value": account},
			map[string]any{"name": "serviceName", "operator": "stringEquals", "value": "kms"},
			map[string]any{"name": "serviceInstance", "operator": "stringEquals", "value": kpGUID}}}},
	})
	key := call("POST", "/api/v2/keys", d.kpHeader, map[string]any{
		"metadata":  map[string]any{"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
		"resources": []any{map[string]any{"type": "application/vnd.ibm.kms.key+json", "name": name + "-disk", "extractable": false}},
	})["resources"].([]any)[0].(map[string]any)
	d.keyID = key["id"].(string)
	dep := call("POST", "/v2/resource_instances", nil, map[string]any{"name": name, "resource_id": "messagehub", "resource_plan_id": "standard",
		"target": "us-south", "parameters": map[string]any{"disk_encryption_key_crn": key["crn"]}})
	d.guid = dep["guid"].(string)
	creds := call("POST", "/v2/resource_keys", nil, map[string]any{"name": name + "-manager", "source": d.guid, "role": "Manager"})["credentials"].(map[string]any)
	d.target = &target{login: kgo.SASL(plain.Auth{User: "token", Pass: creds["api_key"].(string)}.AsMechanism())}
	for _, b := range creds["kafka_brokers_sasl"].([]any) {
		d.target.seeds = append(d.target.seeds, b.(string))
	}
	return d
}
