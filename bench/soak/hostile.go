package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/client"
)

// Hostile clients connect from their own loopback addresses, so that a
// server limiting connections per source can tell them from the
// well-behaved clients on 127.0.0.1.
var (
	slowLoginSource = net.IPv4(127, 0, 0, 2)
	slowBodySource  = net.IPv4(127, 0, 0, 3)
	fetchSource     = net.IPv4(127, 0, 0, 4)
)

// dribbleEvery is how often a slow client sends its next byte.
const dribbleEvery = 3 * time.Second

// attack is one kind of hostile client, counted.
type attack struct {
	name     string
	open     atomic.Int64 // connections open now
	peakOpen atomic.Int64
	dialed   atomic.Int64
	dialErrs atomic.Int64
	cut      atomic.Int64 // connections the server closed
	done     atomic.Int64 // requests that got a whole answer (fetches)
	bytes    atomic.Int64 // answer bytes read (fetches)
	firstErr atomic.Pointer[string]
}

func (a *attack) note(err error) {
	s := err.Error()
	a.firstErr.CompareAndSwap(nil, &s)
}

// dial connects from src, counting; on failure it waits a second, so that
// a refusing server is not spun against.
func (a *attack) dial(ctx context.Context, src net.IP, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: src}, Timeout: 5 * time.Second}
	a.dialed.Add(1)
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		a.dialErrs.Add(1)
		a.note(err)
		sleep(ctx, time.Second)
		return nil, err
	}
	n := a.open.Add(1)
	for {
		p := a.peakOpen.Load()
		if n <= p || a.peakOpen.CompareAndSwap(p, n) {
			break
		}
	}
	return c, nil
}

func (a *attack) closed(c net.Conn) {
	c.Close()
	a.open.Add(-1)
}

func (a *attack) String() string {
	s := fmt.Sprintf("%-17s peak open %5d, dialed %6d, dial errors %6d, cut by server %6d", a.name, a.peakOpen.Load(), a.dialed.Load(), a.dialErrs.Load(), a.cut.Load())
	if a.done.Load() > 0 || a.name == "oversized fetch" {
		s += fmt.Sprintf(", answers %d (%.0f MB)", a.done.Load(), float64(a.bytes.Load())/1e6)
	}
	if e := a.firstErr.Load(); e != nil {
		s += "; first error: " + *e
	}
	return s
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// hostile are the attacks of the second phase.
type hostile struct {
	kafka, http string // addresses
	es          *client.EventStreams
	token       string // bearer token for the slow HTTP bodies
	slowLogins  int
	slowBodies  int
	fetches     int
	fillParts   int32

	logins, bodies, fetch attack
}

// run starts every hostile client and returns once they have all stopped,
// after ctx ends.
func (h *hostile) run(ctx context.Context) {
	h.logins.name, h.bodies.name, h.fetch.name = "slow login", "slow HTTP body", "oversized fetch"
	var wg sync.WaitGroup
	for i := range h.slowLogins {
		wg.Go(func() {
			h.loop(ctx, &h.logins, slowLoginSource, h.kafka, func(c net.Conn) error { return h.slowLogin(ctx, c, i) })
		})
	}
	for i := range h.slowBodies {
		wg.Go(func() {
			h.loop(ctx, &h.bodies, slowBodySource, h.http, func(c net.Conn) error { return h.slowBody(ctx, c, i) })
		})
	}
	for range h.fetches {
		wg.Go(func() {
			h.loop(ctx, &h.fetch, fetchSource, h.kafka, func(c net.Conn) error { return h.oversizedFetch(ctx, c) })
		})
	}
	wg.Wait()
}

// loop connects and runs f until ctx ends, reconnecting whenever the server
// closes the connection.
func (h *hostile) loop(ctx context.Context, a *attack, src net.IP, addr string, f func(net.Conn) error) {
	for ctx.Err() == nil {
		c, err := a.dial(ctx, src, addr)
		if err != nil {
			continue
		}
		stop := context.AfterFunc(ctx, func() { c.Close() })
		err = f(c)
		stop()
		a.closed(c)
		if ctx.Err() == nil {
			a.cut.Add(1)
			if err != nil {
				a.note(err)
			}
			sleep(ctx, 100*time.Millisecond)
		}
	}
}

// dribble writes prefix, then one byte of rest every dribbleEvery, and
// returns when the server closes the connection (or sends anything, which
// is read and dropped).
func dribble(ctx context.Context, c net.Conn, prefix, rest []byte) error {
	gone := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, c)
		if err == nil {
			err = io.EOF
		}
		gone <- err
	}()
	if _, err := c.Write(prefix); err != nil {
		return err
	}
	t := time.NewTicker(dribbleEvery)
	defer t.Stop()
	for {
		select {
		case err := <-gone:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			if len(rest) == 0 {
				continue
			}
			if _, err := c.Write(rest[:1]); err != nil {
				return err
			}
			rest = rest[1:]
		}
	}
}

// slowLogin never finishes logging in: half the clients send a frame's
// size and a few bytes of it, the other half complete the SASL handshake
// and dribble the authenticate request.
func (h *hostile) slowLogin(ctx context.Context, c net.Conn, i int) error {
	auth := plainAuth(h.es)
	frame := kmsg.NewRequestFormatter(kmsg.FormatterClientID("soak-slow-login")).AppendRequest(nil, auth, 1)
	if i%2 == 0 {
		return dribble(ctx, c, frame[:10], frame[10:])
	}
	k := &kconn{Conn: c}
	if err := k.handshake(); err != nil {
		return err
	}
	return dribble(ctx, c, frame[:6], frame[6:])
}

// slowBody sends a Key Protect wrap request's headers, authenticated, and
// dribbles its body; one client in a hundred claims a chunk of 2 GiB.
func (h *hostile) slowBody(ctx context.Context, c net.Conn, i int) error {
	var head strings.Builder
	fmt.Fprintf(&head, "POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nBluemix-Instance: %s\r\nContent-Type: application/json\r\n",
		client.Path("api", "v2", "keys", h.es.KeyID, "actions", "wrap"), h.http, h.token, h.es.KeyProtect)
	body := `{"plaintext":"` + strings.Repeat("A", 1<<16) + `"}`
	if i%100 == 0 {
		head.WriteString("Transfer-Encoding: chunked\r\n\r\n7fffffff\r\n")
	} else {
		fmt.Fprintf(&head, "Content-Length: %d\r\n\r\n", len(body))
	}
	return dribble(ctx, c, []byte(head.String()), []byte(body))
}

// oversizedFetch logs in and asks, again and again, for everything in the
// filled topic with byte limits of 2^31-1, reading each answer through
// without keeping it.
func (h *hostile) oversizedFetch(ctx context.Context, c net.Conn) error {
	k := &kconn{Conn: c}
	if err := k.handshake(); err != nil {
		return err
	}
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	resp.Version = 1
	if err := k.roundTrip(plainAuth(h.es), resp); err != nil {
		return err
	}
	if resp.ErrorCode != 0 {
		return fmt.Errorf("SASL authenticate: error code %d", resp.ErrorCode)
	}
	fetch := kmsg.NewPtrFetchRequest()
	fetch.Version = 11
	fetch.MaxWaitMillis = 100
	fetch.MinBytes = 1
	fetch.MaxBytes = math.MaxInt32
	topic := kmsg.NewFetchRequestTopic()
	topic.Topic = fillTopic
	for p := range h.fillParts {
		part := kmsg.NewFetchRequestTopicPartition()
		part.Partition = p
		part.PartitionMaxBytes = math.MaxInt32
		topic.Partitions = append(topic.Partitions, part)
	}
	fetch.Topics = []kmsg.FetchRequestTopic{topic}
	for ctx.Err() == nil {
		if err := k.send(fetch); err != nil {
			return err
		}
		n, err := k.discard()
		if err != nil {
			return err
		}
		h.fetch.done.Add(1)
		h.fetch.bytes.Add(n)
	}
	return nil
}

// kconn speaks Kafka's framing over a raw connection, with kmsg encoding.
type kconn struct {
	net.Conn
	corr int32
}

func (k *kconn) send(req kmsg.Request) error {
	k.corr++
	_, err := k.Write(kmsg.NewRequestFormatter(kmsg.FormatterClientID("soak")).AppendRequest(nil, req, k.corr))
	return err
}

// roundTrip sends req and decodes the answer (non-flexible versions only).
func (k *kconn) roundTrip(req kmsg.Request, resp kmsg.Response) error {
	if err := k.send(req); err != nil {
		return err
	}
	var size [4]byte
	if _, err := io.ReadFull(k, size[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < 4 || n > 1<<20 {
		return fmt.Errorf("answer of %d bytes to %s", n, kmsg.NameForKey(req.Key()))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(k, body); err != nil {
		return err
	}
	return resp.ReadFrom(body[4:]) // after the correlation id
}

// discard reads one answer through and returns its size.
func (k *kconn) discard() (int64, error) {
	var size [4]byte
	if _, err := io.ReadFull(k, size[:]); err != nil {
		return 0, err
	}
	n := int64(binary.BigEndian.Uint32(size[:]))
	_, err := io.CopyN(io.Discard, k, n)
	return n, err
}

// handshake asks for SASL PLAIN.
func (k *kconn) handshake() error {
	req := kmsg.NewPtrSASLHandshakeRequest()
	req.Version = 1
	req.Mechanism = "PLAIN"
	resp := kmsg.NewPtrSASLHandshakeResponse()
	resp.Version = 1
	if err := k.roundTrip(req, resp); err != nil {
		return err
	}
	if resp.ErrorCode != 0 {
		return fmt.Errorf("SASL handshake: error code %d", resp.ErrorCode)
	}
	return nil
}

// plainAuth is the SASL PLAIN login with the deployment's credentials.
func plainAuth(es *client.EventStreams) *kmsg.SASLAuthenticateRequest {
	auth := kmsg.NewPtrSASLAuthenticateRequest()
	auth.Version = 1
	auth.SASLAuthBytes = []byte("\x00" + es.User + "\x00" + es.APIKey)
	return auth
}
