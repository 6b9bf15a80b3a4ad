package broker

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// conn is one client connection. Requests are read, handled and answered one
// at a time, in order, as Kafka does; the next request is read only after the
// previous response is written.
// loginTimeout is how long a new connection may take to authenticate.
const loginTimeout = 30 * time.Second

type conn struct {
	b      *Broker
	nc     net.Conn
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc
	once   sync.Once

	mechanism string // set by SaslHandshake
	rawSASL   bool   // SaslHandshake v0: the next frame is a bare PLAIN token
	authed    bool
	user      string
	access    Access
	closing   bool   // close after writing the current response
	clientID  string // of the request being handled
	wbuf      []byte
	rbuf      []byte // produce frames are read into it (see readFrameInto)
	// arena holds the fetched batches of the response being built; it
	// comes from the broker's pool and goes back once the response is
	// written.
	arena  []byte
	pooled *[]byte
}

func (b *Broker) newConn(nc net.Conn) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &conn{b: b, nc: nc, ctx: ctx, cancel: cancel, log: b.log.With("remote", nc.RemoteAddr().String())}
}

// close ends the connection at once, waking any handler that waits.
func (c *conn) close() {
	c.once.Do(func() {
		c.cancel()
		c.nc.Close()
	})
}

func (c *conn) serve(parent context.Context) {
	defer c.close()
	stop := context.AfterFunc(parent, c.close)
	defer stop()
	loginBy := time.Now().Add(loginTimeout)
	for {
		max := int32(preAuthMaxBytes)
		deadline := time.Now().Add(c.b.cfg.IdleTimeout)
		if c.authed {
			max = c.b.cfg.MaxRequestBytes
		} else if loginBy.Before(deadline) {
			deadline = loginBy // strangers get little time to log in
		}
		c.nc.SetReadDeadline(deadline)
		frame, err := readFrameInto(c.nc, max, &c.rbuf)
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
			c.log.Info("kafka request before authentication refused", "key", req.key)
			return
		}
		c.clientID = ""
		if req.clientID != nil {
			c.clientID = *req.clientID
		}
		start := time.Now()
		resp, err := c.dispatch(c.ctx, req)
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
		if c.closing {
			return
		}
	}
}

// bigResponse is the size from which a response is encoded into a pooled
// buffer rather than the connection's own.
const bigResponse = 64 << 10

// respond encodes and writes resp, then gives the pooled buffers back.
func (c *conn) respond(corr int32, resp kmsg.Response) bool {
	defer c.releaseArena()
	hint := responseSizeHint(resp)
	if hint < bigResponse {
		c.wbuf = appendResponse(slices.Grow(c.wbuf[:0], hint), corr, resp)
		return c.write(c.wbuf)
	}
	buf := c.b.getBuf()
	*buf = appendResponse(slices.Grow((*buf)[:0], hint), corr, resp)
	ok := c.write(*buf)
	c.b.putBuf(buf)
	return ok
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
}

func (c *conn) write(p []byte) bool {
	c.nc.SetWriteDeadline(time.Now().Add(c.b.cfg.IdleTimeout))
	if _, err := c.nc.Write(p); err != nil {
		c.logEnd(err)
		return false
	}
	if cap(c.wbuf) > 1<<20 { // do not pin a large fetch response's buffer
		c.wbuf = nil
	}
	return true
}

func (c *conn) logEnd(err error) {
	var fe *frameError
	switch {
	case errors.As(err, &fe):
		c.log.Warn("kafka connection closed: bad request", "reason", fe.msg)
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), c.ctx.Err() != nil:
	default:
		c.log.Debug("kafka connection closed", "err", err)
	}
}

// login checks a SASL PLAIN token ("authzid\x00user\x00password") and returns
// the message to send back when it is refused.
func (c *conn) login(token []byte) (refusal string) {
	if reason := c.b.lockReason(); reason != "" {
		return reason
	}
	parts := bytes.Split(token, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 {
		return "malformed SASL PLAIN credentials"
	}
	user, password := string(parts[1]), string(parts[2])
	if len(parts[0]) > 0 && string(parts[0]) != user {
		return "authorization identity must be empty or equal the user name"
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	access, err := c.b.cfg.Authenticate(ctx, user, password)
	if err != nil || access == NoAccess {
		msg := "authentication failed: invalid credentials"
		if err != nil && err.Error() != "" {
			msg = err.Error()
		}
		c.log.Info("kafka login refused", "user", user)
		return msg
	}
	// The lock may have come while the callback ran.
	if reason := c.b.lockReason(); reason != "" {
		return reason
	}
	c.authed, c.user, c.access = true, user, access
	c.log = c.log.With("user", user)
	c.log.Debug("kafka login", "access", access.String())
	return ""
}

// rawAuthenticate handles the un-framed token that follows SaslHandshake v0.
// Success is answered with an empty token; failure closes the connection, as
// Kafka does for this old flow.
func (c *conn) rawAuthenticate(token []byte) bool {
	c.rawSASL = false
	if refusal := c.login(token); refusal != "" {
		return false
	}
	var empty [4]byte
	binary.BigEndian.PutUint32(empty[:], 0)
	return c.write(empty[:])
}
