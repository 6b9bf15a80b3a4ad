package server

import (
	"io"
	"net/http"
	"time"
)

// Defaults of the HTTP edge's limits (Config.RequestBodyTimeout and the rest).
const (
	defaultBodyTimeout    = 30 * time.Second
	defaultWriteTimeout   = 30 * time.Second
	defaultIdleTimeout    = 120 * time.Second
	defaultMaxConnections = 1024
)

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
