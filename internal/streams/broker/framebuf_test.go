package broker

import (
	"bytes"
	"encoding/binary"
	"testing"
)

func frameOf(key int16, body string) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(2+len(body)))
	b = binary.BigEndian.AppendUint16(b, uint16(key))
	return append(b, body...)
}

// TestOnlyProduceFramesShareTheConnectionBuffer: a produce frame is read
// into the reused buffer; any other frame, which its handler may keep, is
// never overwritten by the next read.
func TestOnlyProduceFramesShareTheConnectionBuffer(t *testing.T) {
	var buf []byte
	stream := bytes.NewReader(append(append(append(frameOf(produceKey, "first produce"), frameOf(11, "join group metadata")...),
		frameOf(produceKey, "second produce")...), frameOf(produceKey, "third")...))
	first, err := readFrameInto(stream, 1<<20, &buf)
	if err != nil || &first[0] != &buf[0] {
		t.Fatalf("a produce frame was not read into the connection's buffer (%v)", err)
	}
	join, err := readFrameInto(stream, 1<<20, &buf)
	if err != nil || &join[0] == &buf[0] {
		t.Fatalf("a non-produce frame shares the connection's buffer (%v)", err)
	}
	for range 2 {
		if _, err := readFrameInto(stream, 1<<20, &buf); err != nil {
			t.Fatal(err)
		}
	}
	if string(join[2:]) != "join group metadata" {
		t.Fatalf("a kept frame was overwritten by later reads: %q", join[2:])
	}
}
