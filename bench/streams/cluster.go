package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/keyline/keyline/bench/internal/benchnode"
	"github.com/keyline/keyline/internal/client"
)

// cluster measures one deployment through real `keyline serve` processes
// in three settings, in one run: one node on local disk (SQLite, seglog
// with fsync), one cluster node (its metadata in PostgreSQL at dbURL, its
// Kafka data in versitygw: objlog), and three cluster nodes sharing them
// (docs/cluster.md: one leads the deployment, the clients know all three).
// Each (setting, record size, partitions) gets a deployment of its own:
// throughput as -only throughput measures it, then produce latency with 8
// producers each waiting for every acknowledgement.
func (b *bench) cluster(dbURL string) {
	bin, err := benchnode.Build(b.tmp)
	if err != nil {
		fatal(err)
	}
	if dbURL == "" {
		pgDir := filepath.Join(b.tmp, "pg")
		if err := os.Chmod(b.tmp, 0o711); err != nil { // PostgreSQL's user must reach its directory
			fatal(err)
		}
		stop, u, err := benchnode.StartPostgres(pgDir)
		if err != nil {
			fatal(err)
		}
		atExit(stop)
		defer stop()
		dbURL = u
	}
	s3 := startVersityGW(b.tmp)
	atExit(s3.stop)
	defer s3.stop()
	settings := []struct {
		name    string
		nodes   int
		objects bool
	}{{"local disk", 1, false}, {"cluster", 1, true}, {"cluster", 3, true}}
	fmt.Println("== Event Streams through keyline serve: one node on local disk (SQLite, seglog, fsync) vs cluster nodes (PostgreSQL + versitygw on this machine, flush window 5 ms) ==")
	fmt.Printf("%-11s %5s %5s %5s %13s %13s %12s %12s %12s\n", "setting", "nodes", "size", "parts", "produce rec/s", "consume rec/s", "p50 produce", "p99 produce", "max produce")
	for si, s := range settings {
		dir := filepath.Join(b.tmp, fmt.Sprintf("setting-%d", si))
		var args, env []string
		nodeDB := ""
		if s.objects {
			u, drop, err := benchnode.Schema(dbURL, fmt.Sprintf("streamsbench_%d_%d", os.Getpid(), si))
			if err != nil {
				fatal(err)
			}
			atExit(drop)
			defer drop()
			nodeDB = u
			args = []string{"--object-store", "s3://bench-cluster?endpoint=http://" + s3.addr + "&region=us-east-1"}
			env = []string{"AWS_ACCESS_KEY_ID=" + s3.access, "AWS_SECRET_ACCESS_KEY=" + s3.secret}
		}
		key := make([]byte, 16)
		rand.Read(key)
		apikey := hex.EncodeToString(key)
		var urls []string
		var stops []func()
		for i := 1; i <= s.nodes; i++ {
			u, stop, err := benchnode.StartNode(bin, dir, nodeDB, apikey, i, args, env)
			if err != nil {
				fatal(err)
			}
			atExit(stop)
			urls, stops = append(urls, u), append(stops, stop)
		}
		for _, size := range b.sizes {
			for _, parts := range b.parts {
				d := provision(context.Background(), client.New(urls[0], apikey), fmt.Sprintf("bench-%d-%d", size, parts))
				// Every node listens once the feed told it of the deployment.
				for start := time.Now(); len(d.target.seeds) < s.nodes; time.Sleep(100 * time.Millisecond) {
					if time.Since(start) > 30*time.Second {
						fatalf("%s, %d nodes: the deployment lists %d brokers: %v", s.name, s.nodes, len(d.target.seeds), d.target.seeds)
					}
					d.target.seeds = nil
					for _, b := range d.call("GET", client.Path("messagehub", d.guid), nil, nil)["kafka_brokers_sasl"].([]any) {
						d.target.seeds = append(d.target.seeds, b.(string))
					}
				}
				waitServing(d.target)
				liftQuotas(d.target)
				r := b.run(d.target, "bench", int32(parts), size, "")
				lat := produceLatency(d.target, int32(parts), size, b.produceFor)
				fmt.Printf("%-11s %5d %5d %5d %13.0f %13.0f %12s %12s %12s\n", s.name, s.nodes, size, parts, r.produceRate, r.consumeRate,
					lat[0].Round(100*time.Microsecond), lat[1].Round(100*time.Microsecond), lat[2].Round(100*time.Microsecond))
			}
		}
		for _, stop := range stops {
			stop()
		}
	}
	fmt.Println("franz-go, acks=all, idempotent, linger 5 ms, random values; the client, the nodes, PostgreSQL and versitygw share this machine")
	fmt.Println("produce latency: 8 producers, each sending one record and waiting for its acknowledgement (acks=all), for the run's length")
}

// liftQuotas raises the deployment's default client quotas (the plan's:
// 20 MB/s each way on Standard, as Event Streams') far above what this
// machine moves, as an operator would for a throughput test: the bench
// measures the log, not the plan's limit.
func liftQuotas(t *target) {
	cl := t.client()
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ops := []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: 1 << 40}, {Key: "consumer_byte_rate", Value: 1 << 40}}
	res, err := kadm.NewClient(cl).AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{Entity: kadm.ClientQuotaEntity{{Type: "user"}}, Ops: ops}})
	if err == nil && len(res) == 1 {
		err = res[0].Err
	}
	if err != nil {
		fatalf("lifting the client quotas: %v", err)
	}
}

// waitServing waits until every broker of t answers a login: each node
// lists its listener once the feed told it of the deployment, and its
// broker logs clients in once it unwrapped the deployment's DEK.
func waitServing(t *target) {
	for _, seed := range t.seeds {
		one := &target{seeds: []string{seed}, login: t.login}
		for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
			cl := one.client()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := cl.Ping(ctx)
			cancel()
			cl.Close()
			if err == nil {
				break
			}
			if time.Since(start) > 30*time.Second {
				fatalf("%s does not serve the deployment: %v", seed, err)
			}
		}
	}
}
