package broker

import (
	"bytes"
	"testing"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// FuzzRequestFraming feeds arbitrary bytes through the frame reader and the
// request decoder: they must return a request or an error, never panic or
// allocate past the frame limit. The seeds are real requests of every
// advertised key at its lowest and highest version.
func FuzzRequestFraming(f *testing.F) {
	fm := kmsg.NewRequestFormatter(kmsg.FormatterClientID("fuzz"))
	for key, v := range apis {
		for _, version := range []int16{v.min, v.max} {
			req := kmsg.RequestForKey(key)
			req.SetVersion(version)
			if d, ok := req.(interface{ Default() }); ok {
				d.Default()
			}
			f.Add(fm.AppendRequest(nil, req, 1))
		}
	}
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0x7f, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		// Frames read back to back through one connection buffer: a frame
		// other than a produce request is never overwritten by later reads.
		var buf []byte
		type kept struct{ frame, copy []byte }
		var keep []kept
		for rd := bytes.NewReader(data); ; {
			fr, err := readFrameInto(rd, 1<<16, &buf)
			if err != nil {
				break
			}
			if len(fr) < 2 || fr[0] != 0 || fr[1] != 0 {
				keep = append(keep, kept{fr, bytes.Clone(fr)})
			}
		}
		for _, k := range keep {
			if !bytes.Equal(k.frame, k.copy) {
				t.Fatal("a kept frame was overwritten by a later read")
			}
		}
		frame, err := readFrame(bytes.NewReader(data), 1<<16)
		if err != nil {
			return
		}
		req, err := decodeRequest(frame)
		if err != nil {
			return
		}
		if req.kreq != nil {
			// What decoded must encode again.
			req.kreq.AppendTo(nil)
		} else if req.key != apiVersionsKey {
			t.Fatalf("key %d decoded without a request", req.key)
		}
	})
}
