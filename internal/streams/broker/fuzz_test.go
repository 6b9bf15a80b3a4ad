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
