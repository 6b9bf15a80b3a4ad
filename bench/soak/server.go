package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// buildKeyline compiles cmd/keyline into dir.
func buildKeyline(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "keyline")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/keyline/keyline/cmd/keyline")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/keyline: %v\n%s", err, out)
	}
	return bin, nil
}

// server is `keyline serve` running as a child process.
type server struct {
	cmd    *exec.Cmd
	url    string
	logs   string // file holding its stdout and stderr
	exited chan struct{}
	err    error // of Wait, once exited is closed
}

// startServer runs bin serve on a fresh data dir on a loopback port, with
// RLIMIT_NOFILE set to nofile (0: inherited), and waits until it answers.
// The server dies with this process (Pdeathsig) even if soak is killed.
func startServer(ctx context.Context, bin, dir, adminKey string, nofile uint64) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	logPath := filepath.Join(dir, "server.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "serve", "--data-dir", filepath.Join(dir, "data"), "--listen", addr, "--kafka-host", "127.0.0.1")
	cmd.Env = append(os.Environ(), "KEYLINE_ADMIN_APIKEY="+adminKey)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, url: "http://" + addr, logs: logPath, exited: make(chan struct{})}
	go func() { s.err = cmd.Wait(); close(s.exited) }()
	if nofile > 0 {
		// Set on the running child rather than on soak itself, which needs
		// more descriptors than the server is to have. Go programs raise
		// their soft limit to the hard one at start, so both are set.
		lim := unix.Rlimit{Cur: nofile, Max: nofile}
		if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
			s.kill()
			return nil, fmt.Errorf("prlimit RLIMIT_NOFILE=%d on the server: %w", nofile, err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		select {
		case <-s.exited:
			return nil, fmt.Errorf("keyline serve exited: %v\n%s", s.err, s.tail())
		default:
		}
		resp, err := http.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	s.kill()
	return nil, fmt.Errorf("keyline serve did not answer /healthz\n%s", s.tail())
}

func (s *server) alive() bool {
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

// kill stops the server with SIGKILL and waits for it.
func (s *server) kill() {
	if s.alive() {
		s.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-s.exited
}

// tail is the end of the server's log, for a failure report.
func (s *server) tail() string {
	data, _ := os.ReadFile(s.logs)
	if len(data) > 4000 {
		data = data[len(data)-4000:]
	}
	return string(data)
}

// usage is the server's resident memory and open descriptors at one moment.
type usage struct {
	rss, hwm int64 // bytes: now and the peak over its life (VmHWM)
	fds      int
}

// sample reads /proc/<pid>/status and counts /proc/<pid>/fd.
func sample(pid int) (usage, error) {
	var u usage
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if !ok || (name != "VmRSS" && name != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(value), " kB"), 10, 64)
		if err != nil {
			return u, fmt.Errorf("%s: %q", name, value)
		}
		if name == "VmRSS" {
			u.rss = kb << 10
		} else {
			u.hwm = kb << 10
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return u, err
	}
	u.fds = len(fds)
	return u, nil
}

// sampler records the server's peak usage per phase, once a second, and
// kills the server past abortRSS so that a leaking server cannot take the
// machine down with it.
type sampler struct {
	mu       sync.Mutex
	peakRSS  int64
	peakFDs  int
	hwm      int64
	aborted  string
	abortRSS int64
}

// reset starts a new phase and returns the peaks of the one before.
func (sm *sampler) reset() (rss int64, fds int) {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	rss, fds = sm.peakRSS, sm.peakFDs
	sm.peakRSS, sm.peakFDs = 0, 0
	return rss, fds
}

func (sm *sampler) run(ctx context.Context, s *server, onAbort func()) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		u, err := sample(s.cmd.Process.Pid)
		if err == nil {
			sm.mu.Lock()
			sm.peakRSS, sm.peakFDs, sm.hwm = max(sm.peakRSS, u.rss), max(sm.peakFDs, u.fds), max(sm.hwm, u.hwm)
			over := sm.abortRSS > 0 && u.rss > sm.abortRSS && sm.aborted == ""
			if over {
				sm.aborted = fmt.Sprintf("server RSS %s passed -rss-abort %s: killed", mib(u.rss), mib(sm.abortRSS))
			}
			sm.mu.Unlock()
			if over {
				s.kill()
				onAbort()
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-s.exited:
			return
		case <-tick.C:
		}
	}
}

func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
