package broker

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// rawConn speaks the Kafka framing directly, for what real clients never send.
type rawConn struct {
	t  *testing.T
	nc net.Conn
	rd *bufio.Reader
	f  *kmsg.RequestFormatter
}

func dialRaw(t *testing.T, tb testBroker) *rawConn {
	nc, err := net.Dial("tcp", tb.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &rawConn{t: t, nc: nc, rd: bufio.NewReader(nc), f: kmsg.NewRequestFormatter(kmsg.FormatterClientID("raw"))}
}

func (rc *rawConn) send(req kmsg.Request, corr int32) {
	if _, err := rc.nc.Write(rc.f.AppendRequest(nil, req, corr)); err != nil {
		rc.t.Fatal(err)
	}
}

// recv reads one response into resp (whose version must be set).
func (rc *rawConn) recv(resp kmsg.Response, flexibleHeader bool) error {
	frame, err := readFrame(rc.rd, 1<<20)
	if err != nil {
		return err
	}
	body := frame[4:]
	if flexibleHeader {
		body = body[1:]
	}
	return resp.ReadFrom(body)
}

func (rc *rawConn) login(key string) {
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, "PLAIN"
	rc.send(hs, 1)
	if err := rc.recv(hs.ResponseKind(), false); err != nil {
		rc.t.Fatal(err)
	}
	auth := kmsg.NewPtrSASLAuthenticateRequest()
	auth.Version, auth.SASLAuthBytes = 1, []byte("\x00token\x00"+key)
	rc.send(auth, 2)
	resp := auth.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	if err := rc.recv(resp, false); err != nil || resp.ErrorCode != 0 {
		rc.t.Fatalf("login: %v code %d", err, resp.ErrorCode)
	}
}

// closed reports whether the broker closed the connection.
func (rc *rawConn) closed() bool {
	_, err := rc.rd.ReadByte()
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool { return err != nil && strings.Contains(err.Error(), "reset") }

func TestBrokerClosesConnectionsOnBadFrames(t *testing.T) {
	tb := startBroker(t, nil)
	size := func(n uint32) []byte { return binary.BigEndian.AppendUint32(nil, n) }
	tests := []struct {
		name  string
		login bool
		send  func(rc *rawConn)
	}{
		{"absurd size", true, func(rc *rawConn) { rc.nc.Write(size(1 << 30)) }},
		{"negative size", false, func(rc *rawConn) { rc.nc.Write(size(0xffffffff)) }},
		{"large frame before login", false, func(rc *rawConn) { rc.nc.Write(size(1 << 20)) }},
		{"unknown key", true, func(rc *rawConn) { rc.nc.Write(append(size(10), 0x03, 0xe7, 0, 0, 0, 0, 0, 1, 0xff, 0xff)) }},
		{"header cut short", true, func(rc *rawConn) { rc.nc.Write(append(size(3), 0, 3, 0)) }},
		{"unsupported metadata version", true, func(rc *rawConn) {
			r := kmsg.NewPtrMetadataRequest()
			r.Version = 99
			rc.send(r, 7)
		}},
		{"body lies about its length", true, func(rc *rawConn) {
			r := kmsg.NewPtrMetadataRequest()
			r.Version = 4
			frame := rc.f.AppendRequest(nil, r, 7)
			binary.BigEndian.PutUint32(frame, uint32(len(frame)+100))
			rc.nc.Write(frame)
			rc.nc.(*net.TCPConn).CloseWrite()
		}},
		{"garbage body", true, func(rc *rawConn) {
			rc.nc.Write(append(size(14), 0, 19, 0, 7, 0, 0, 0, 1, 0xff, 0xff, 0x7f, 0xff, 0xff, 0xff))
		}},
		{"metadata before login", false, func(rc *rawConn) { rc.send(kmsg.NewPtrMetadataRequest(), 1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := dialRaw(t, tb)
			if tt.login {
				rc.login(writerKey)
			}
			tt.send(rc)
			if !rc.closed() {
				t.Fatal("connection still open")
			}
		})
	}
	// The broker still serves after all that.
	if err := tb.client(t, readerKey).Ping(testCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestApiVersionsTooNewGetsV0Answer(t *testing.T) {
	tb := startBroker(t, nil)
	rc := dialRaw(t, tb)
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 42
	rc.send(req, 3)
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	if err := rc.recv(resp, false); err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode != kerr.UnsupportedVersion.Code || len(resp.ApiKeys) != len(apis) {
		t.Fatalf("code %d with %d keys", resp.ErrorCode, len(resp.ApiKeys))
	}
	for _, k := range resp.ApiKeys {
		if k.ApiKey == saslHandshakeKey && k.MinVersion != 0 {
			t.Fatal("SaslHandshake must be advertised from v0 for librdkafka")
		}
	}
}

func TestIdleConnectionIsClosed(t *testing.T) {
	tb := startBroker(t, nil, func(c *Config) { c.IdleTimeout = 100 * time.Millisecond })
	rc := dialRaw(t, tb)
	rc.nc.Write([]byte{0, 0}) // half a size, then silence
	if !rc.closed() {
		t.Fatal("idle connection still open")
	}
}

func TestLockClosesConnectionsAndRefusesLogins(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "orders", 1)
	rc := dialRaw(t, tb)
	rc.login(readerKey)

	const reason = "the deployment is locked: its key is disabled"
	tb.Lock(reason)
	if !rc.closed() {
		t.Fatal("an open connection survived the lock")
	}
	err := tb.client(t, readerKey).Ping(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), reason) {
		t.Fatalf("login while locked: %v, want the lock reason", err)
	}

	tb.Unlock()
	cl := tb.client(t, writerKey, kgo.DefaultProduceTopic("orders"))
	if err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("after unlock")}).FirstErr(); err != nil {
		t.Fatalf("produce after unlock: %v", err)
	}
}

func TestSASLHandshakeV0TakesBarePlainToken(t *testing.T) {
	tb := startBroker(t, nil)
	rc := dialRaw(t, tb)
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 0, "PLAIN"
	rc.send(hs, 1)
	if err := rc.recv(hs.ResponseKind(), false); err != nil {
		t.Fatal(err)
	}
	token := []byte("\x00token\x00" + readerKey)
	rc.nc.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(token))), token...))
	var empty [4]byte
	if _, err := io.ReadFull(rc.rd, empty[:]); err != nil || binary.BigEndian.Uint32(empty[:]) != 0 {
		t.Fatalf("v0 login answer %v %v", empty, err)
	}
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 1
	rc.send(md, 9)
	resp := md.ResponseKind().(*kmsg.MetadataResponse)
	if err := rc.recv(resp, false); err != nil || resp.ControllerID != 1 {
		t.Fatalf("metadata after v0 login: %v controller %d", err, resp.ControllerID)
	}
}

func TestConnectionsOverTheLimitAreClosed(t *testing.T) {
	tb := startBroker(t, nil, func(c *Config) { c.MaxConnections = 1 })
	first := dialRaw(t, tb)
	first.login(readerKey)
	second := dialRaw(t, tb)
	if !second.closed() {
		t.Fatal("a connection over the limit stayed open")
	}
	first.nc.Close()
	waitFor(t, "the slot to free", func() bool {
		rc := dialRaw(t, tb)
		req := kmsg.NewPtrApiVersionsRequest()
		rc.send(req, 1)
		return rc.recv(req.ResponseKind(), false) == nil
	})
}

func TestRefusedLoginAnswers58ThenCloses(t *testing.T) {
	tb := startBroker(t, nil)
	rc := dialRaw(t, tb)
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, "PLAIN"
	rc.send(hs, 1)
	if err := rc.recv(hs.ResponseKind(), false); err != nil {
		t.Fatal(err)
	}
	auth := kmsg.NewPtrSASLAuthenticateRequest()
	auth.Version, auth.SASLAuthBytes = 2, []byte("\x00token\x00guess")
	rc.send(auth, 2)
	resp := auth.ResponseKind().(*kmsg.SASLAuthenticateResponse)
	if err := rc.recv(resp, true); err != nil {
		t.Fatal(err)
	}
	if resp.ErrorCode != kerr.SaslAuthenticationFailed.Code || resp.ErrorMessage == nil || *resp.ErrorMessage != "the API key is not valid" {
		t.Fatalf("refusal: code %d message %v", resp.ErrorCode, resp.ErrorMessage)
	}
	if !rc.closed() {
		t.Fatal("connection open after a refused login")
	}
}
