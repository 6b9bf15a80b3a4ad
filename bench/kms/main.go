// Command kms measures the Key Protect API's wrap and unwrap throughput and
// latency over real HTTP (loopback, keep-alive), with the KMS, its store and
// its audit trail in-process.
//
//	go run ./bench/kms -duration 5s -workers 1,16
//	go run ./bench/kms -allowed-ip 10.0.0.0/8,127.0.0.0/8   (with an enabled allowedIP policy)
//	go run ./bench/kms -database-url 'postgres://...'       (metadata in an empty PostgreSQL database)
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/kms/kpapi"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

const instance = "b3c1d2e3-0000-4000-8000-00000000beef"

func main() {
	duration := flag.Duration("duration", 5*time.Second, "how long each measurement runs")
	workerList := flag.String("workers", "1,16", "comma list of concurrent clients")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here")
	auditKind := flag.String("audit", "at", "audit trail: at (the Activity Tracker, group-committed) or none (KMS cost only)")
	authKind := flag.String("auth", "iam", "authentication and authorization: iam (Keyline's IAM, signed tokens) or table (a fixed table)")
	allowedIP := flag.String("allowed-ip", "", "comma list of CIDRs: enable an allowedIP policy on the instance (it must admit 127.0.0.1)")
	databaseURL := flag.String("database-url", "", "keep the metadata in this empty PostgreSQL database rather than SQLite in a temporary directory")
	flag.Parse()
	if err := run(*duration, *workerList, *cpuProfile, *auditKind, *authKind, *allowedIP, *databaseURL); err != nil {
		log.Fatal(err)
	}
}

func run(duration time.Duration, workerList, cpuProfile, auditKind, authKind, allowedIP, databaseURL string) error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kms-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db, err := store.Open(ctx, dir, databaseURL)
	if err != nil {
		return err
	}
	defer db.Close()
	master, err := seal.New(seal.RandomKey())
	if err != nil {
		return err
	}
	auditor, atLog, err := newAuditor(ctx, db, auditKind)
	if err != nil {
		return err
	}
	if atLog != nil {
		defer atLog.Close()
	}
	ba, err := newAuth(ctx, db, master, atLog, authKind)
	if err != nil {
		return err
	}
	svc, err := kms.New(ctx, kms.Config{DB: db, Master: master, Authorizer: ba.authz, Audit: auditor})
	if err != nil {
		return err
	}
	if err := svc.CreateInstance(ctx, kms.Instance{GUID: instance, AccountID: ba.account}); err != nil {
		return err
	}
	if err := ba.grant(instance); err != nil {
		return err
	}
	key, err := svc.CreateKey(auth.WithPrincipal(ctx, ba.caller), instance, kms.CreateKeyInput{Name: "bench-root"})
	if err != nil {
		return err
	}
	if allowedIP != "" {
		on := true
		policy := kms.InstancePolicy{PolicyType: kms.InstancePolicyAllowedIP, PolicyData: kms.InstancePolicyData{Enabled: &on,
			Attributes: &kms.InstancePolicyAttr{AllowedIP: strings.Split(allowedIP, ",")}}}
		if err := svc.SetInstancePolicies(auth.WithPrincipal(ctx, ba.caller), instance, kms.InstancePolicyAllowedIP, []kms.InstancePolicy{policy}); err != nil {
			return err
		}
	}
	token := ba.token
	mux := http.NewServeMux()
	kpapi.New(svc, ba.authn, nil).Register(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: httpapi.Middleware(nil, mux)}
	go srv.Serve(ln)
	defer srv.Close()
	base := "http://" + ln.Addr().String() + "/api/v2/keys/" + key.ID + "/actions/"

	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("kms bench: GOMAXPROCS=%d, %s per run, audit=%s, auth=%s, allowed-ip=%q\n", runtime.GOMAXPROCS(0), duration, auditKind, authKind, allowedIP)
	dek := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	wrapBody := []byte(`{"plaintext":"` + dek + `","aad":["bench"]}`)
	for _, ws := range strings.Split(workerList, ",") {
		workers, err := strconv.Atoi(strings.TrimSpace(ws))
		if err != nil || workers < 1 {
			return fmt.Errorf("bad worker count %q", ws)
		}
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}}
		wrapped, err := measure(client, token, "wrap", workers, duration, func(i int, last []byte) (string, []byte) {
			return base + "wrap", wrapBody
		})
		if err != nil {
			return err
		}
		var ct struct {
			Ciphertext string `json:"ciphertext"`
		}
		if err := json.Unmarshal(wrapped, &ct); err != nil || ct.Ciphertext == "" {
			return fmt.Errorf("wrap answered %s", wrapped)
		}
		unwrapBody := []byte(`{"ciphertext":"` + ct.Ciphertext + `","aad":["bench"]}`)
		if _, err := measure(client, token, "unwrap", workers, duration, func(int, []byte) (string, []byte) {
			return base + "unwrap", unwrapBody
		}); err != nil {
			return err
		}
		client.CloseIdleConnections()
	}
	return nil
}

// measure runs workers clients for d and prints throughput and latency.
func measure(client *http.Client, token, name string, workers int, d time.Duration, next func(int, []byte) (string, []byte)) ([]byte, error) {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      []time.Duration
		failures atomic.Int64
		firstErr error
		lastBody []byte
	)
	deadline := time.Now().Add(d)
	start := time.Now()
	cpuStart := processCPU()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			local := make([]time.Duration, 0, 1<<16)
			var body []byte
			for time.Now().Before(deadline) {
				url, req := next(w, body)
				t0 := time.Now()
				hr, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(req))
				hr.Header.Set("Authorization", "Bearer "+token)
				hr.Header.Set("Bluemix-Instance", instance)
				// Key Protect clients send a correlation id with every request.
				hr.Header.Set("Correlation-Id", fmt.Sprintf("bench-%d-%d", w, len(local)))
				resp, err := client.Do(hr)
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("%s: status %d: %s", name, resp.StatusCode, body)
					}
				}
				if err != nil {
					failures.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				local = append(local, time.Since(t0))
			}
			mu.Lock()
			lat = append(lat, local...)
			if lastBody == nil {
				lastBody = body
			}
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpuStart
	if firstErr != nil {
		return nil, fmt.Errorf("%d failures, first: %w", failures.Load(), firstErr)
	}
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(float64(len(lat)-1)*p)]
	}
	// CPU per operation (server and client, this process) is steadier than
	// ops/s on a machine shared with other work.
	var cpuPerOp time.Duration
	if len(lat) > 0 {
		cpuPerOp = cpu / time.Duration(len(lat))
	}
	fmt.Printf("%-6s workers=%-3d ops=%-8d ops/s=%-9.0f p50=%-10v p99=%-10v cpu/op=%v\n", name, workers, len(lat),
		float64(len(lat))/elapsed.Seconds(), pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), cpuPerOp.Round(time.Microsecond))
	return lastBody, nil
}

// processCPU is the CPU time this process has used (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
