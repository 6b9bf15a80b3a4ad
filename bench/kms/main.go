// Command kms measures the Key Protect API's wrap and unwrap throughput and
// latency over real HTTP (loopback, keep-alive). The KMS, its store and its
// audit trail run in a child process (this program again, with -serve), so
// that the CPU time per operation is the server's alone, apart from the
// load generator's; -cpuprofile profiles that server process.
//
//	go run ./bench/kms -duration 5s -workers 1,16 [-cpuprofile cpu.prof] [-memprofile mem.prof]
//	go run ./bench/kms -allowed-ip 10.0.0.0/8,127.0.0.0/8   (with an enabled allowedIP policy)
//	go run ./bench/kms -database-url 'postgres://...'       (metadata in an empty PostgreSQL database)
package main

import (
	"bufio"
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
	"os/exec"
	"runtime"
	"runtime/metrics"
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
	keyline "github.com/keyline/keyline/internal/server"
	"github.com/keyline/keyline/internal/store"
)

const instance = "b3c1d2e3-0000-4000-8000-00000000beef"

func main() {
	duration := flag.Duration("duration", 5*time.Second, "how long each measurement runs")
	workerList := flag.String("workers", "1,16", "comma list of concurrent clients")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile here")
	memProfile := flag.String("memprofile", "", "write the server's allocation profile here when it stops")
	auditKind := flag.String("audit", "at", "audit trail: at (the Activity Tracker, group-committed) or none (KMS cost only)")
	authKind := flag.String("auth", "iam", "authentication and authorization: iam (Keyline's IAM, signed tokens) or table (a fixed table)")
	allowedIP := flag.String("allowed-ip", "", "comma list of CIDRs: enable an allowedIP policy on the instance (it must admit 127.0.0.1)")
	databaseURL := flag.String("database-url", "", "keep the metadata in this empty PostgreSQL database rather than SQLite in a temporary directory")
	serve := flag.Bool("serve", false, "be the server: print its address on stdout and answer CPU queries on stdin (run by the bench itself)")
	flag.Parse()
	var err error
	if *serve {
		err = runServer(*cpuProfile, *memProfile, *auditKind, *authKind, *allowedIP, *databaseURL)
	} else {
		err = runLoad(*duration, *workerList)
	}
	if err != nil {
		log.Fatal(err)
	}
}

// serverInfo is what the server process tells the load generator.
type serverInfo struct {
	Base  string `json:"base"` // URL of the root key's actions, ending in '/'
	Token string `json:"token"`
	Label string `json:"label"`
}

// runServer sets up the KMS and serves it until stdin closes. Each line
// read from stdin is answered with the process's usage so far (a
// serverUsage).
func runServer(cpuProfile, memProfile, auditKind, authKind, allowedIP, databaseURL string) error {
	keyline.TuneRuntime(0) // as keyline serve runs
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
	mux := http.NewServeMux()
	kpapi.New(svc, ba.authn, nil).Register(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: httpapi.Middleware(nil, mux)}
	go srv.Serve(ln)
	defer srv.Close()
	if memProfile != "" {
		defer func() {
			if f, err := os.Create(memProfile); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		}()
	}
	if cpuProfile != "" {
		f, err := os.Create(cpuProfile)
		if err != nil {
			return err
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	info := serverInfo{Base: "http://" + ln.Addr().String() + "/api/v2/keys/" + key.ID + "/actions/", Token: ba.token,
		Label: fmt.Sprintf("server GOMAXPROCS=%d, audit=%s, auth=%s, allowed-ip=%q", runtime.GOMAXPROCS(0), auditKind, authKind, allowedIP)}
	if err := json.NewEncoder(os.Stdout).Encode(info); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		u := serverUsage{CPU: processCPU(), Allocs: heapAllocs(), Syscalls: processSyscalls()}
		if err := json.NewEncoder(os.Stdout).Encode(u); err != nil {
			return err
		}
	}
	return nil
}

// server is the server process as the load generator sees it.
type server struct {
	serverInfo
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// startServer runs this program again with -serve and the flags it was
// given.
func startServer() (*server, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	s := &server{cmd: exec.Command(exe, append([]string{"-serve"}, os.Args[1:]...)...)}
	s.cmd.Stderr = os.Stderr
	if s.in, err = s.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	s.out = bufio.NewScanner(stdout)
	if !s.out.Scan() || json.Unmarshal(s.out.Bytes(), &s.serverInfo) != nil {
		s.stop()
		return nil, fmt.Errorf("the server process did not start: %v", s.out.Err())
	}
	return s, nil
}

// serverUsage is what the server process has used so far. Allocations
// and system calls do not drift with the machine's load as CPU time does.
type serverUsage struct {
	CPU      time.Duration `json:"cpu"`
	Allocs   uint64        `json:"allocs"`   // heap objects allocated
	Syscalls uint64        `json:"syscalls"` // read and write system calls (Linux; else 0)
}

// usage is the server process's usage so far.
func (s *server) usage() (serverUsage, error) {
	var u serverUsage
	if _, err := io.WriteString(s.in, "usage\n"); err != nil {
		return u, err
	}
	if !s.out.Scan() {
		return u, fmt.Errorf("the server process went away: %v", s.out.Err())
	}
	err := json.Unmarshal(s.out.Bytes(), &u)
	return u, err
}

// stop closes the server's stdin and waits for it to write its profile
// and exit.
func (s *server) stop() error {
	s.in.Close()
	return s.cmd.Wait()
}

// runLoad starts the server process and measures wrap and unwrap against it.
func runLoad(duration time.Duration, workerList string) error {
	srv, err := startServer()
	if err != nil {
		return err
	}
	defer srv.stop()
	base, token := srv.Base, srv.Token
	fmt.Printf("kms bench: load GOMAXPROCS=%d, %s per run; %s\n", runtime.GOMAXPROCS(0), duration, srv.Label)
	dek := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5a}, 32))
	wrapBody := []byte(`{"plaintext":"` + dek + `","aad":["bench"]}`)
	for _, ws := range strings.Split(workerList, ",") {
		workers, err := strconv.Atoi(strings.TrimSpace(ws))
		if err != nil || workers < 1 {
			return fmt.Errorf("bad worker count %q", ws)
		}
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers}}
		wrapped, err := measure(srv, client, token, "wrap", workers, duration, func(i int, last []byte) (string, []byte) {
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
		if _, err := measure(srv, client, token, "unwrap", workers, duration, func(int, []byte) (string, []byte) {
			return base + "unwrap", unwrapBody
		}); err != nil {
			return err
		}
		client.CloseIdleConnections()
	}
	return srv.stop()
}

// measure runs workers clients for d and prints throughput and latency.
func measure(srv *server, client *http.Client, token, name string, workers int, d time.Duration, next func(int, []byte) (string, []byte)) ([]byte, error) {
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
	serverStart, err := srv.usage()
	if err != nil {
		return nil, err
	}
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
	serverEnd, err := srv.usage()
	if err != nil {
		return nil, err
	}
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
	// CPU per operation is steadier than ops/s on a machine shared with
	// other work; the server's is the figure to watch, the load
	// generator's (client) is shown apart.
	perOp := func(d time.Duration) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return (d / time.Duration(len(lat))).Round(100 * time.Nanosecond)
	}
	countPerOp := func(n uint64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(n) / float64(len(lat))
	}
	fmt.Printf("%-6s workers=%-3d ops=%-8d ops/s=%-9.0f p50=%-10v p99=%-10v server-cpu/op=%-8v client-cpu/op=%-8v server-allocs/op=%-6.1f server-syscalls/op=%.2f\n",
		name, workers, len(lat), float64(len(lat))/elapsed.Seconds(), pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond),
		perOp(serverEnd.CPU-serverStart.CPU), perOp(cpu), countPerOp(serverEnd.Allocs-serverStart.Allocs), countPerOp(serverEnd.Syscalls-serverStart.Syscalls))
	return lastBody, nil
}

// heapAllocs is how many heap objects this process has allocated.
func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:objects"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// processSyscalls is how many read and write system calls this process
// has made (syscr and syscw of /proc/self/io), 0 where that is unknown.
func processSyscalls() uint64 {
	b, err := os.ReadFile("/proc/self/io")
	if err != nil {
		return 0
	}
	var n uint64
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			c, _ := strconv.ParseUint(v, 10, 64)
			n += c
		} else if v, ok := strings.CutPrefix(line, "syscw: "); ok {
			c, _ := strconv.ParseUint(v, 10, 64)
			n += c
		}
	}
	return n
}

// processCPU is the CPU time this process has used (user and system).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
