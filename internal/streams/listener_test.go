package streams

import (
	"context"
	"net"
	"testing"

	"github.com/keyline/keyline/internal/streams/broker"
)

func TestDeploymentShowsItsKafkaListener(t *testing.T) {
	h := newHarness(t)
	h.configure = func(c *Config) { c.MaxPreAuthPerIP = 2 }
	h.restart()
	inst, _ := h.provisionWithKey()
	info, err := h.svc.Deployment(context.Background(), inst.GUID)
	if err != nil {
		t.Fatal(err)
	}
	for range 5 { // strangers that never log in, over the cap of 2
		c, err := net.Dial("tcp", info.KafkaBrokers[0])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
	}
	eventually(t, "the deployment to show its strangers at their cap", func() bool {
		info, err = h.svc.Deployment(context.Background(), inst.GUID)
		return err == nil && info.KafkaConnections != nil && *info.KafkaConnections == broker.ConnectionCounts{Open: 2, PreAuth: 2}
	})
	if l := info.KafkaListener; l == nil || !l.Healthy || l.AcceptErrors != 0 {
		t.Fatalf("listener health %+v, want healthy", l)
	}
}
