package broker

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// request is one decoded Kafka request with its header.
type request struct {
	key      int16
	version  int16
	corr     int32
	clientID *string
	kreq     kmsg.Request // nil when the version is unsupported (only for ApiVersions)
}

// frameError is a request the broker cannot answer; the connection closes.
type frameError struct{ msg string }

func (e *frameError) Error() string { return e.msg }

func badFrame(format string, args ...any) error { return &frameError{fmt.Sprintf(format, args...)} }

// readFrame reads one size-prefixed frame, refusing sizes over max before
// allocating anything.
func readFrame(r io.Reader, max int32) ([]byte, error) {
	return readFrameInto(r, max, nil)
}

// maxReusedFrame bounds the frame buffer a connection keeps between
// requests.
const maxReusedFrame = 8 << 20

// readFrameInto is readFrame reading into *buf when it is large enough (and
// keeping a new buffer there when it is not). Only a produce request may
// stay in *buf: its handler is done with the bytes (the log copies them
// while sealing) before the next frame is read. Any other request may be
// kept by its handler (group member metadata, say), so it gets its own copy.
func readFrameInto(r io.Reader, max int32, buf *[]byte) ([]byte, error) {
	n, err := readFrameSize(r, max)
	if err != nil {
		return nil, err
	}
	return readFrameBody(r, n, buf)
}

// readFrameSize reads a frame's size prefix, refusing sizes over max.
func readFrameSize(r io.Reader, max int32) (int32, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return 0, err
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < 0 || n > max {
		return 0, badFrame("frame of %d bytes is over the limit of %d", n, max)
	}
	return n, nil
}

// readFrameBody reads the n bytes of a frame as readFrameInto does.
func readFrameBody(r io.Reader, n int32, buf *[]byte) ([]byte, error) {
	var body []byte
	shared := false // body lives in *buf
	if buf != nil && cap(*buf) >= int(n) {
		body, shared = (*buf)[:n], true
	} else {
		body = make([]byte, n)
		if buf != nil && n <= maxReusedFrame {
			*buf, shared = body, true
		}
	}
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	if shared && (len(body) < 2 || int16(binary.BigEndian.Uint16(body)) != produceKey) {
		body = bytes.Clone(body)
	}
	return body, nil
}

// decodeRequest parses a frame's header and body with kmsg. A version outside
// the advertised range is an error except for ApiVersions, which must answer
// with the versions it does support.
func decodeRequest(frame []byte) (*request, error) {
	rd := kbin.Reader{Src: frame}
	req := &request{key: rd.Int16(), version: rd.Int16(), corr: rd.Int32()}
	req.clientID = rd.NullableString()
	if !rd.Ok() {
		return nil, badFrame("request header is truncated")
	}
	api, ok := apis[req.key]
	if !ok {
		return nil, badFrame("request key %d is not supported", req.key)
	}
	if req.version < api.min || req.version > api.max {
		if req.key == apiVersionsKey {
			return req, nil
		}
		return nil, badFrame("%s v%d is not supported (v%d-v%d are)", kmsg.NameForKey(req.key), req.version, api.min, api.max)
	}
	kreq := kmsg.RequestForKey(req.key)
	kreq.SetVersion(req.version)
	if kreq.IsFlexible() {
		kmsg.SkipTags(&rd)
		if !rd.Ok() {
			return nil, badFrame("request header tags are truncated")
		}
	}
	if err := kreq.ReadFrom(rd.Src); err != nil {
		return nil, badFrame("%s v%d does not decode: %v", kmsg.NameForKey(req.key), req.version, err)
	}
	req.kreq = kreq
	return req, nil
}

// responseSizeHint is about how many bytes resp encodes to when that is
// large (a fetch response carries the record batches), so that the
// response is encoded into one buffer of the right size instead of one
// regrown, and copied, a dozen times.
func responseSizeHint(resp kmsg.Response) int {
	fr, ok := resp.(*kmsg.FetchResponse)
	if !ok {
		return 0
	}
	n := 64
	for _, t := range fr.Topics {
		n += 64 + len(t.Topic)
		for _, p := range t.Partitions {
			n += 64 + len(p.RecordBatches) + 16*len(p.AbortedTransactions)
		}
	}
	return n
}

// appendResponse frames resp for corr. The ApiVersions response header never
// has the flexible tag byte, so that a client can read it whatever version it
// asked for.
func appendResponse(dst []byte, corr int32, resp kmsg.Response) []byte {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = kbin.AppendInt32(dst, corr)
	if resp.IsFlexible() && resp.Key() != apiVersionsKey {
		dst = append(dst, 0)
	}
	dst = resp.AppendTo(dst)
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-4))
	return dst
}
