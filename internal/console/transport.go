package console

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/keyline/keyline/internal/httpapi"
)

// inProcess is an http.RoundTripper that serves each request with the API's
// own handler in this process, so the console goes through exactly the
// checks, validation and audit events of the API and never through the
// network. The response body is a pipe, so a streaming answer (the Activity
// Tracker's follow mode) arrives as the handler flushes it.
type inProcess struct{ api http.Handler }

func (t inProcess) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	in := req.Clone(ctx)
	in.RequestURI = req.URL.RequestURI()
	if in.Body == nil {
		in.Body = http.NoBody
	}
	// Carry the browser's address, agent and correlation id to the API, so
	// its audit events name who really called, through the console.
	ri := httpapi.Info(req.Context())
	in.RemoteAddr = "127.0.0.1:0"
	if ri.ClientIP != "" {
		in.RemoteAddr = net.JoinHostPort(ri.ClientIP, "0")
	}
	if ri.UserAgent != "" {
		in.Header.Set("User-Agent", ri.UserAgent)
	}
	if ri.CorrelationID != "" {
		in.Header.Set("Correlation-Id", ri.CorrelationID)
	}
	pr, pw := io.Pipe()
	w := &pipeResponse{ctx: ctx, header: http.Header{}, body: pw, ready: make(chan struct{})}
	go func() {
		defer func() {
			if v := recover(); v != nil {
				w.WriteHeader(http.StatusInternalServerError)
				pw.CloseWithError(fmt.Errorf("console: API handler panicked: %v", v))
				return
			}
			w.WriteHeader(http.StatusOK)
			pw.Close()
		}()
		t.api.ServeHTTP(w, in)
	}()
	select {
	case <-w.ready:
	case <-ctx.Done():
		cancel()
		pr.Close()
		return nil, ctx.Err()
	}
	return &http.Response{
		Status: fmt.Sprintf("%d %s", w.status, http.StatusText(w.status)), StatusCode: w.status,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: w.sent, Body: &cancelBody{ReadCloser: pr, cancel: cancel}, ContentLength: -1, Request: req,
	}, nil
}

// cancelBody ends the handler's request context when the caller closes the
// body, so a followed stream stops when the browser goes away.
type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	b.cancel()
	return b.ReadCloser.Close()
}

// pipeResponse is the http.ResponseWriter the API handler writes into.
type pipeResponse struct {
	ctx    context.Context
	header http.Header
	sent   http.Header
	body   *io.PipeWriter
	once   sync.Once
	ready  chan struct{}
	status int
}

func (w *pipeResponse) Header() http.Header { return w.header }

func (w *pipeResponse) WriteHeader(code int) {
	w.once.Do(func() {
		w.status = code
		w.sent = w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeResponse) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(p)
}

// FlushError lets handlers that flush (http.ResponseController) learn that
// the reader has gone away. Writes go straight into the pipe, so there is
// nothing to flush.
func (w *pipeResponse) FlushError() error {
	w.WriteHeader(http.StatusOK)
	return w.ctx.Err()
}
