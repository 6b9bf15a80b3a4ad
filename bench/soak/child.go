package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/keyline/keyline/internal/client"
)

// The hostile clients run, by default, in a child process of their own at
// a low CPU priority (-hostile-nice): they stand in for other machines, as
// real attackers are, so that the verdict measures what the attack costs
// the server rather than what running a thousand attackers costs the two
// cores the server and the well-behaved clients share with them. Every
// connection and request still reaches the server unchanged.
const hostileEnv = "KEYLINE_SOAK_HOSTILE"

// hostilePlan is what the child needs to attack.
type hostilePlan struct {
	Kafka, HTTP string
	ES          *client.EventStreams
	Token       string
	SlowLogins  int
	SlowBodies  int
	Fetches     int
	FillParts   int32
}

// attackCount is an attack's counters as the child reports them.
type attackCount struct {
	Name                                         string
	PeakOpen, Dialed, DialErrs, Cut, Done, Bytes int64
	FirstErr                                     string
}

func countOf(a *attack) attackCount {
	c := attackCount{Name: a.name, PeakOpen: a.peakOpen.Load(), Dialed: a.dialed.Load(), DialErrs: a.dialErrs.Load(),
		Cut: a.cut.Load(), Done: a.done.Load(), Bytes: a.bytes.Load()}
	if e := a.firstErr.Load(); e != nil {
		c.FirstErr = *e
	}
	return c
}

func (c attackCount) into(a *attack) {
	a.name = c.Name
	a.peakOpen.Store(c.PeakOpen)
	a.dialed.Store(c.Dialed)
	a.dialErrs.Store(c.DialErrs)
	a.cut.Store(c.Cut)
	a.done.Store(c.Done)
	a.bytes.Store(c.Bytes)
	if c.FirstErr != "" {
		a.firstErr.Store(&c.FirstErr)
	}
}

// hostileChild is main in the child: it attacks until its stdin closes,
// then prints the counters as JSON on stdout.
func hostileChild(planJSON string) error {
	var p hostilePlan
	if err := json.Unmarshal([]byte(planJSON), &p); err != nil {
		return fmt.Errorf("soak: hostile plan: %w", err)
	}
	h := &hostile{kafka: p.Kafka, http: p.HTTP, es: p.ES, token: p.Token, slowLogins: p.SlowLogins,
		slowBodies: p.SlowBodies, fetches: p.Fetches, fillParts: p.FillParts}
	ctx, stop := context.WithCancel(context.Background())
	go func() { io.Copy(io.Discard, os.Stdin); stop() }()
	h.run(ctx)
	return json.NewEncoder(os.Stdout).Encode([]attackCount{countOf(&h.logins), countOf(&h.bodies), countOf(&h.fetch)})
}

// hostileProcess runs h's attacks in a child process at niceness nice
// until ctx ends, then fills h's counters from the child's report.
func hostileProcess(ctx context.Context, h *hostile, nice int) error {
	plan, err := json.Marshal(hostilePlan{Kafka: h.kafka, HTTP: h.http, ES: h.es, Token: h.token, SlowLogins: h.slowLogins,
		SlowBodies: h.slowBodies, Fetches: h.fetches, FillParts: h.fillParts})
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), hostileEnv+"="+string(plan))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	var out syncBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := unix.Setpriority(unix.PRIO_PROCESS, cmd.Process.Pid, nice); err != nil {
		fmt.Fprintf(os.Stderr, "soak: warning: could not lower the hostile clients' priority: %v\n", err)
	}
	<-ctx.Done()
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("soak: hostile clients: %w", err)
	}
	var counts []attackCount
	if err := json.Unmarshal(out.Bytes(), &counts); err != nil || len(counts) != 3 {
		return fmt.Errorf("soak: hostile clients' report %q: %v", out.Bytes(), err)
	}
	counts[0].into(&h.logins)
	counts[1].into(&h.bodies)
	counts[2].into(&h.fetch)
	return nil
}

type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf
}
