package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// conn is one client connection. Requests are read and handled one at a
// time and answered in order, as Kafka does. A produce request's answer waits
// for its data to be on disk in a writer goroutine while the next request is
// read and handled, so that a client's pipelined produce requests (franz-go
// keeps up to 5 in flight) share fsyncs instead of taking turns.
type conn struct {
	b      *Broker
	nc     net.Conn
	ip     string // the source address, as admission counts it
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	mechanism string // set by SaslHandshake
	rawSASL   bool   // SaslHandshake v0: the next frame is a bare PLAIN token
	authed    bool
	preAuth   bool // holds a stranger's slot (guarded by b.mu)
	user      string
	// sess is the current login, read by the handlers and replaced by the
	// broker's re-authorization sweep; nil grants nothing.
	sess     atomic.Pointer[session]
	closing  bool           // close after writing the current response
	clientID string         // of the request being handled
	rbuf     []byte         // small produce frames are read into it (see readFrameInto)
	mem      connMemory     // of the broker's memory budgets
	durable  []func() error // what the request being handled must wait for before its answer
	// quotaHeld is what the fetch being handled holds of its quota.
	quotaHeld quotaHold
	out       chan outgoing // answers in order, to the writer
	// arena holds the fetched batches of the response being built; it
	// comes from the broker's pool and goes back once the response is
	// written.
	arena  []byte
	pooled *[]byte
	// readArenas hold the batches of partitions read concurrently for the
	// response being built; they go back to the pool with the arena.
	readArenas []*[]byte
}

func (b *Broker) newConn(nc net.Conn) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &conn{b: b, nc: nc, ip: sourceIP(nc.RemoteAddr()), ctx: ctx, cancel: cancel, log: b.log.With("remote", nc.RemoteAddr().String())}
}

// close ends the connection at once, waking any handler that waits.
func (c *conn) close() {
	c.once.Do(func() {
		c.cancel()
		c.nc.Close()
	})
}

// outgoing is a framed answer, written once what it waits for is durable.
type outgoing struct {
	buf     *[]byte
	pooled  bool // buf goes back to the broker's pool once written
	durable []func() error
	mem     heldResponse // of the fetch budgets, until written
}

// maxPipelined bounds the answers waiting to be written: the reader stops
// reading while that many are pending.
const maxPipelined = 8

func (c *conn) serve(parent context.Context) {
	defer c.close()
	defer c.releaseMemory()
	stop := context.AfterFunc(parent, c.close)
	defer stop()
	c.out = make(chan outgoing, maxPipelined)
	written := make(chan struct{})
	log := c.log // c.log changes at login; the writer keeps its own
	go func() { defer close(written); c.writeLoop(log) }()
	defer func() { close(c.out); <-written }()
	loginBy := time.Now().Add(c.b.cfg.LoginTimeout)
	for {
		max := int32(preAuthMaxBytes)
		deadline := time.Now().Add(c.b.cfg.IdleTimeout)
		if c.authed {
			max = c.b.cfg.MaxRequestBytes
		} else if loginBy.Before(deadline) {
			deadline = loginBy // strangers get little time to log in
		}
		c.nc.SetReadDeadline(deadline)
		frame, err := c.readRequest(max)
		if err != nil {
			c.logEnd(err)
			return
		}
		if c.rawSASL {
			if !c.rawAuthenticate(frame) {
				return
			}
			continue
		}
		req, err := decodeRequest(frame)
		if err != nil {
			c.logEnd(err)
			return
		}
		if !c.authed && req.key != apiVersionsKey && req.key != saslHandshakeKey && req.key != saslAuthenticateKey {
			c.b.quiet.early.Log(c.log, slog.LevelInfo, "kafka request before authentication refused", "key", req.key)
			return
		}
		if c.authed && req.key != saslHandshakeKey && req.key != saslAuthenticateKey && c.loginExpired() {
			c.log.Info("kafka connection closed: its login expired without re-authentication")
			return
		}
		c.clientID = ""
		if req.clientID != nil {
			c.clientID = *req.clientID
		}
		start := time.Now()
		c.durable = nil
		resp, err := c.dispatch(c.ctx, req)
		muted := c.throttle(req.kreq, len(frame), resp)
		c.recordChanges(req.kreq, resp)
		if c.log.Enabled(c.ctx, slog.LevelDebug) {
			c.log.Debug("kafka request", "api", kmsg.NameForKey(req.key), "version", req.version, "took", time.Since(start))
		}
		if err != nil {
			c.logEnd(err)
			return
		}
		if resp != nil && !c.respond(req.corr, resp) {
			return
		}
		if c.closing || !c.mute(muted) {
			return
		}
	}
}

// respond frames resp (the fetch arena is free again after that) and queues
// it with what the request waits for. Only large answers (fetches) use
// pooled buffers: a small one waiting for an fsync must not hold a pooled
// buffer of many MiB.
func (c *conn) respond(corr int32, resp kmsg.Response) bool {
	hint := responseSizeHint(resp)
	o := outgoing{buf: new([]byte), durable: c.durable}
	if hint >= bigResponse {
		o.buf, o.pooled = c.b.getBuf(), true
	}
	*o.buf = appendResponse(slices.Grow((*o.buf)[:0], hint), corr, resp)
	o.mem = c.holdResponse(len(*o.buf))
	c.releaseArena()
	return c.queue(o)
}

// bigResponse is the size from which an answer is encoded into a pooled
// buffer.
const bigResponse = 64 << 10

// queue hands o to the writer; false once the connection is closing.
func (c *conn) queue(o outgoing) bool {
	select {
	case c.out <- o:
		return true
	case <-c.ctx.Done():
		c.release(o)
		return false
	}
}

func (c *conn) release(o outgoing) {
	o.mem.release(c.b.fetchMem)
	if o.pooled {
		c.b.putBuf(o.buf)
	}
}

// writeLoop writes the answers in order, each once its data is durable. An
// answer whose data did not reach the disk is never sent: the connection
// closes and the client retries.
func (c *conn) writeLoop(log *slog.Logger) {
	failed := false
	for o := range c.out {
		for _, wait := range o.durable {
			if failed {
				break
			}
			if err := wait(); err != nil {
				log.Error("a produced batch did not reach the disk; closing the connection unanswered", "err", err)
				failed = true
			}
		}
		if !failed {
			c.nc.SetWriteDeadline(time.Now().Add(c.b.cfg.IdleTimeout))
			if _, err := c.nc.Write(*o.buf); err != nil {
				if !errors.Is(err, net.ErrClosed) && c.ctx.Err() == nil {
					log.Debug("kafka connection closed", "err", err)
				}
				failed = true
			}
		}
		c.release(o)
		if failed {
			c.close()
		}
	}
}

// fetchArena is the buffer fetched batches are read into.
func (c *conn) fetchArena() []byte {
	if c.pooled == nil {
		c.pooled = c.b.getBuf()
		c.arena = (*c.pooled)[:0]
	}
	return c.arena
}

func (c *conn) releaseArena() {
	if c.pooled != nil {
		*c.pooled = c.arena
		c.b.putBuf(c.pooled)
		c.pooled, c.arena = nil, nil
	}
	c.releaseReadArenas()
	c.releaseFetchMemory()
}

func (c *conn) releaseReadArenas() {
	for _, a := range c.readArenas {
		if a != nil {
			c.b.putBuf(a)
		}
	}
	c.readArenas = c.readArenas[:0]
}

func (c *conn) logEnd(err error) {
	var fe *frameError
	switch {
	case errors.As(err, &fe):
		c.b.quiet.badRequest.Log(c.log, slog.LevelWarn, "kafka connection closed: bad request", "reason", fe.msg)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), c.ctx.Err() != nil:
	default:
		c.log.Debug("kafka connection closed", "err", err)
	}
}

// login checks a SASL token of the handshake's mechanism and returns the
// message to send back when it is refused. On a connection already logged
// in it is a re-authentication (KIP-368): the new login replaces the old.
func (c *conn) login(mechanism string, token []byte) (refusal string) {
	if reason := c.b.lockReason(); reason != "" {
		return reason
	}
	cr, refusal := parseCredentials(mechanism, token)
	if refusal != "" {
		return refusal
	}
	ctx, cancel := context.WithTimeout(c.ctx, authTimeout)
	defer cancel()
	l, err := c.b.cfg.Login(ctx, cr)
	a := compileACL(l)
	if err != nil || !a.allows(ClusterResource, "", Reader) {
		msg := "authentication failed: invalid credentials"
		if err != nil && err.Error() != "" {
			msg = err.Error()
		} else if err == nil {
			msg = "authentication failed: the credentials grant no Reader role on this cluster"
		}
		c.b.quiet.loginRefused.Log(c.log, slog.LevelInfo, "kafka login refused", "user", cr.User, "mechanism", mechanism)
		return msg
	}
	// The lock may have come while the callback ran.
	if reason := c.b.lockReason(); reason != "" {
		return reason
	}
	if old := c.sess.Load(); c.authed && (old == nil || old.principal != l.Principal || old.user != cr.User) {
		return "a re-authentication must keep the identity the connection logged in with"
	}
	c.sess.Store(&session{user: cr.User, password: cr.Secret, mechanism: mechanism, access: l.Access, acl: a, expires: l.Expires, principal: l.Principal})
	if c.authed {
		c.log.Debug("kafka re-authentication", "mechanism", mechanism)
		return ""
	}
	c.authed, c.user = true, cr.User
	c.b.loggedIn(c)
	c.log = c.log.With("user", cr.User)
	c.log.Debug("kafka login", "mechanism", mechanism, "access", l.Access.String(), "grants", len(l.Grants))
	return ""
}

// rawAuthenticate handles the un-framed token that follows SaslHandshake v0.
// Success is answered with an empty token; failure closes the connection, as
// Kafka does for this old flow.
func (c *conn) rawAuthenticate(token []byte) bool {
	c.rawSASL = false
	if refusal := c.login(saslPlain, token); refusal != "" {
		return false
	}
	empty := binary.BigEndian.AppendUint32(nil, 0)
	return c.queue(outgoing{buf: &empty})
}
