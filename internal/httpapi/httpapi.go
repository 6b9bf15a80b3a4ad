// Package httpapi is the shared HTTP edge of every Keyline API: correlation
// ids, request logging without secrets, bounded JSON decoding, and bearer
// token extraction. Each API writes errors in its own format.
package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
)

type ctxKey int

const (
	correlationKey ctxKey = iota
	requestKey
)

// requestState is what Middleware keeps in a request's context: one value
// (each context value is an allocation or two on every request).
type requestState struct {
	info RequestInfo
	// logPath is the path Middleware logs; log is the state holding the
	// request's own (this one, or the request's for WithCorrelationID's).
	logPath string
	log     *requestState
}

// RequestInfo is what audit events need to know of the HTTP request.
type RequestInfo struct {
	Method        string
	URI           string // path only: query strings may carry secrets
	ClientIP      string
	UserAgent     string
	CorrelationID string
}

// Info returns the request info stored by Middleware, or a zero value.
func Info(ctx context.Context) RequestInfo {
	if st, ok := ctx.Value(requestKey).(*requestState); ok {
		return st.info
	}
	return RequestInfo{}
}

// CorrelationID returns the request's correlation id ("" outside a request).
func CorrelationID(ctx context.Context) string { return Info(ctx).CorrelationID }

// WithCorrelationID returns a context that carries id as its correlation id,
// for work that is not an HTTP request (schedulers, event deliveries).
func WithCorrelationID(ctx context.Context, id string) context.Context {
	st := &requestState{info: Info(ctx)}
	st.info.CorrelationID = id
	st.log = st
	if old, ok := ctx.Value(requestKey).(*requestState); ok {
		st.log = old.log
	}
	return context.WithValue(ctx, requestKey, st)
}

// Middleware gives every request a correlation id (taken from the
// correlation-id header when the client sent one), echoes it, and logs the
// request's method, path, status and duration, never its query or body.
func Middleware(logger *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := r.Header.Get("Correlation-Id")
		if id == "" {
			id = r.Header.Get("X-Correlation-Id")
		}
		if id == "" || len(id) > 128 || strings.ContainsAny(id, "\r\n") {
			id = uuid.NewString()
		}
		st := &requestState{info: RequestInfo{Method: r.Method, URI: r.URL.Path, ClientIP: clientIP(r), UserAgent: r.UserAgent(), CorrelationID: id},
			logPath: r.URL.Path}
		st.log = st
		w.Header().Set("Correlation-Id", id)
		sw := &statusWriter{ResponseWriter: w, status: 200}
		ctx := context.WithValue(r.Context(), requestKey, st)
		next.ServeHTTP(sw, r.WithContext(ctx))
		if logger != nil {
			logger.LogAttrs(r.Context(), slog.LevelInfo, "http", slog.String("method", r.Method), slog.String("path", st.logPath),
				slog.Int("status", sw.status), slog.Duration("took", time.Since(start)), slog.String("correlation_id", id))
		}
	})
}

// RedactPath makes Middleware log path in place of the request's own, for
// routes whose path carries customer data (a topic name, say) that must not
// reach the logs. Call it from the handler, inside Middleware.
func RedactPath(ctx context.Context, path string) {
	if st, ok := ctx.Value(requestKey).(*requestState); ok {
		st.log.logPath = path
	}
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// Flush lets streaming handlers (event follow) flush through the wrapper.
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// MaxBody is the default limit on a JSON request body.
const MaxBody = 1 << 20

// DecodeJSON reads a JSON body of at most limit bytes into v, refusing
// unknown fields, trailing data and oversize bodies with errors that say
// which. An empty body (or the literal null) leaves v untouched and returns
// errEmpty only when required is true.
func DecodeJSON(r *http.Request, v any, limit int64, required bool) error {
	body, err := ReadJSON(r, limit, required)
	if err != nil || body == nil {
		return err
	}
	return DecodeJSONBytes(body, v)
}

// ReadJSON is the first half of DecodeJSON: it reads the body and returns
// it trimmed of white space, or nil when it is empty (or the literal null)
// and not required. Handlers with a fast path for their usual body read it
// with ReadJSON and hand anything else to DecodeJSONBytes.
func ReadJSON(r *http.Request, limit int64, required bool) ([]byte, error) {
	const op = "httpapi.DecodeJSON"
	if limit <= 0 {
		limit = MaxBody
	}
	body, err := readBody(r, limit+1)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "BAD_BODY_ERR", "The request body could not be read")
	}
	if int64(len(body)) > limit {
		return nil, errs.Ef(op, errs.TooLarge, "BODY_TOO_LARGE_ERR", "The request body is larger than %d bytes", limit)
	}
	// Read to its end: closed now, net/http need not drain it after the
	// handler (which it does, with an allocation and a read, for a body
	// left open even when nothing remains).
	r.Body.Close()
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		if required {
			return nil, errs.E(op, errs.Invalid, "NO_BODY_ERR", "Missing body in request")
		}
		return nil, nil
	}
	return trimmed, nil
}

// readBody reads at most max bytes of r's body into a buffer sized by its
// Content-Length when that is known (io.ReadAll starts at 512 bytes and
// grows; most bodies are far smaller).
func readBody(r *http.Request, max int64) ([]byte, error) {
	size := int64(512)
	if r.ContentLength >= 0 {
		size = min(r.ContentLength+1, max) // +1: room to see the end without growing
	}
	b := make([]byte, 0, size)
	lr := io.LimitedReader{R: r.Body, N: max}
	for {
		n, err := lr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
	}
}

// DecodeJSONBytes is the second half of DecodeJSON: it decodes a body read
// by ReadJSON into v.
func DecodeJSONBytes(body []byte, v any) error {
	const op = "httpapi.DecodeJSON"
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(op, err)
	}
	if dec.More() {
		return errs.E(op, errs.Invalid, "BAD_BODY_ERR", "The request body has data after the JSON value")
	}
	return nil
}

func jsonError(op string, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return errs.Ef(op, errs.Invalid, "BAD_BODY_ERR", "The request body is not valid JSON (at byte %d)", syn.Offset)
	case errors.As(err, &typ):
		return errs.Ef(op, errs.Invalid, "BAD_BODY_ERR", "The field %q must be a %s", typ.Field, typ.Type).On("field", typ.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return errs.Ef(op, errs.Invalid, "BAD_BODY_ERR", "The field %q is not allowed in this request", field).On("field", field)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errs.E(op, errs.Invalid, "BAD_BODY_ERR", "The request body is truncated JSON")
	}
	return errs.E(op, errs.Invalid, "BAD_BODY_ERR", "The request body could not be decoded")
}

// BearerToken returns the token of an "Authorization: Bearer <token>" header.
func BearerToken(r *http.Request) (string, error) {
	const op = "httpapi.BearerToken"
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", errs.E(op, errs.Unauthenticated, "UNAUTHORIZED_ERR", "The Authorization header is missing: send \"Authorization: Bearer <IAM access token>\"")
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return "", errs.E(op, errs.Unauthenticated, "UNAUTHORIZED_ERR", "The Authorization header must be \"Bearer <IAM access token>\"")
	}
	return strings.TrimSpace(token), nil
}

// Authenticate verifies the request's bearer token and returns a context
// that carries the principal.
func Authenticate(r *http.Request, authn auth.Authenticator) (context.Context, *auth.Principal, error) {
	token, err := BearerToken(r)
	if err != nil {
		return nil, nil, err
	}
	p, err := authn.AuthenticateToken(r.Context(), token)
	if err != nil {
		return nil, nil, err
	}
	return auth.WithPrincipal(r.Context(), p), p, nil
}

// WriteJSON writes v as JSON with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if v != nil {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(v); err != nil {
			fmt.Fprintln(io.Discard, err) // the client went away; nothing to do
		}
	}
}
