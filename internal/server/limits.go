package server

import (
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/connhold"
)

// Defaults of the HTTP edge's limits (Config.RequestBodyTimeout and the rest).
const (
	defaultBodyTimeout    = 30 * time.Second
	defaultWriteTimeout   = 30 * time.Second
	defaultIdleTimeout    = 120 * time.Second
	defaultMaxConnections = 1024
)

// DefaultGCPercent is the collector's target (GOGC) of `keyline serve`
// unless the environment sets GOGC: Go's default of 100 collects whenever
// the heap has doubled, and the KMS allocates about 8 KiB of short-lived
// objects a call; at 200 the server spends 61-65 µs of CPU a wrap instead
// of 67-69 (bench/kms, 16 callers). The live heap is small (tens of MiB),
// so the heap allowed is too, and --memory-limit (the runtime's GOMEMLIMIT)
// still bounds it: past the limit the collector runs as often as needed.
const DefaultGCPercent = 200

// TuneRuntime sets the Go runtime as `keyline serve` runs: memoryLimit (when
// positive) as its soft memory limit, and DefaultGCPercent unless GOGC is
// set. Benchmarks of the server call it too, to measure what runs.
func TuneRuntime(memoryLimit int64) {
	if memoryLimit > 0 {
		debug.SetMemoryLimit(memoryLimit)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGCPercent)
	}
}

// connectionLimits are the HTTP listener's caps: total connections open at
// once (more wait to be accepted) and those from one source address (more
// are closed at once). Left at 0, total is 1024 or, under a lower
// RLIMIT_NOFILE, a quarter of it, so that the descriptors left serve the
// Kafka listeners and the store, whatever HTTP clients do; perSource is a
// quarter of total (but up to 64 of a small total), so that one address's
// clients, however many, leave room for others.
func connectionLimits(total, perSource int, nofile uint64) (int, int) {
	if total <= 0 {
		total = defaultMaxConnections
		if nofile > 0 && nofile/4 < uint64(total) {
			total = max(int(nofile/4), 1)
		}
	}
	if perSource <= 0 {
		perSource = max(total/4, min(total, 64))
	}
	return total, min(perSource, total)
}

var openFileLimit = connhold.OpenFileLimit

// perSourceListener refuses each connection from an address that already
// has max open: the listener's total cap makes the rest wait, and without
// this one client's connections (a flood of slow bodies) would take every
// slot and leave the others waiting behind them. A refused connection is
// held, unread, before it is closed (within the holder's descriptor budget,
// closed at once past it), so that a client redialling at once costs an
// accept per hold instead of one per round trip; past the budget its source
// address is shut out at the socket for as long (connhold.Gate), so that it
// costs nothing at all.
type perSourceListener struct {
	net.Listener
	max  int
	hold *connhold.Holder
	gate *connhold.Gate // shuts out a source refused past the holder's budget
	mu   sync.Mutex
	open map[string]int
}

func limitPerSource(ln net.Listener, max int) *perSourceListener {
	hold := connhold.Process()
	return &perSourceListener{Listener: ln, max: max, hold: hold, gate: connhold.NewGate(ln, hold.Delay()), open: map[string]int{}}
}

func (l *perSourceListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr())
		l.mu.Lock()
		ok := l.open[src] < l.max
		if ok {
			l.open[src]++
		}
		l.mu.Unlock()
		if !ok {
			l.hold.Refuse(c, l.gate)
			continue
		}
		return &sourceConn{Conn: c, l: l, src: src}, nil
	}
}

func (l *perSourceListener) Close() error {
	l.gate.Close()
	return l.Listener.Close()
}

// sourceOf is the host part of a remote address.
func sourceOf(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	return a.String()
}

// sourceConn gives its source's slot back when it is closed (once).
type sourceConn struct {
	net.Conn
	l    *perSourceListener
	src  string
	once sync.Once
}

func (c *sourceConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.open[c.src]--; c.l.open[c.src] <= 0 {
			delete(c.l.open, c.src)
		}
		c.l.mu.Unlock()
	})
	return err
}

// withDeadlines bounds each request's body and each response write with
// per-request deadlines, in place of http.Server's ReadTimeout and
// WriteTimeout: those cover a whole connection's request, so they would cut
// long-lived streams (the audit follow, the console's live activity), and an
// expired ReadTimeout cancels a running handler's context.
//
// The body must arrive in full within body of the request's start; once it
// has (or when there is none), the connection has no read deadline, so a
// stream can run as long as its client reads. Each write (and flush) must
// finish within write of its start, so a client that stops reading is let
// go while one that waits quietly for the next event is not; what is still
// buffered when the handler returns gets one more write deadline.
func withDeadlines(next http.Handler, body, write time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if body > 0 && r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody {
			rc.SetReadDeadline(time.Now().Add(body))
			r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
		}
		if write > 0 {
			pw := &progressWriter{ResponseWriter: w, rc: rc, d: write}
			w = pw
			// The server flushes what is buffered after the handler returns.
			defer pw.extend()
		}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the read deadline once the body has been read, so it
// cannot end a handler that outlives it: net/http watches the idle
// connection with a read from then on, and a timeout there cancels the
// request's context.
type deadlineBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	done bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.done {
		b.done = true
		b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// progressWriter gives each write and flush its own deadline, lifted once
// it is done: over HTTP/2 a stream whose write deadline passes is reset
// even when nothing is being written, which would end a quiet stream.
type progressWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (p *progressWriter) extend() { p.rc.SetWriteDeadline(time.Now().Add(p.d)) }
func (p *progressWriter) lift()   { p.rc.SetWriteDeadline(time.Time{}) }

func (p *progressWriter) Write(b []byte) (int, error) {
	p.extend()
	defer p.lift()
	return p.ResponseWriter.Write(b)
}

func (p *progressWriter) Flush() { p.FlushError() }

// FlushError lets http.ResponseController report a failed flush.
func (p *progressWriter) FlushError() error {
	p.extend()
	defer p.lift()
	return p.rc.Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (p *progressWriter) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// withMemoryLimit derives the Kafka memory budgets the operator left out
// from cfg.MemoryLimit, so that what fetches and large requests may hold
// at once, with the garbage the runtime keeps under its soft limit, fits
// in it.
func withMemoryLimit(cfg Config) Config {
	if cfg.MemoryLimit <= 0 {
		return cfg
	}
	for _, b := range []struct {
		process, deployment *int64
		share               int64
	}{{&cfg.KafkaFetchMemory, &cfg.KafkaDeploymentFetchMemory, 4}, {&cfg.KafkaRequestMemory, &cfg.KafkaDeploymentRequestMemory, 8}} {
		if *b.process <= 0 {
			*b.process = max(cfg.MemoryLimit/b.share, 1)
		}
		if *b.deployment <= 0 {
			*b.deployment = min(*b.process, 256<<20) // the broker's own default
		}
	}
	return cfg
}
