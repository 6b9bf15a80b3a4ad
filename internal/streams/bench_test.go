package streams

import (
	"context"
	"testing"

	"github.com/keyline/keyline/internal/auth"
)

// BenchmarkKeyDisableToLockAndBack measures one disable -> locked ->
// enable -> unlocked cycle of a deployment with data: the KMS event, the
// lock (connections closed, DEK wiped), the unwrap and reopen of the log,
// and both acknowledgements.
func BenchmarkKeyDisableToLockAndBack(b *testing.B) {
	h := newHarness(b)
	inst, key := h.provisionWithKey()
	h.createTopic(inst, "orders", 3)
	produceN(b, h.client(inst, auth.RoleWriter), "orders", "o", 3000)
	b.ResetTimer()
	for b.Loop() {
		h.waitAck(h.kms.act(b, key, ActionDisable)[0])
		h.waitAck(h.kms.act(b, key, ActionEnable)[0])
	}
	b.StopTimer()
	if info, _ := h.svc.Deployment(context.Background(), inst.GUID); info.State != StateActive {
		b.Fatalf("state %s after the last enable", info.State)
	}
}

// BenchmarkRotationReencrypt measures a full rotation of a deployment
// holding about 1 MiB of records: rewrap, re-encryption under a fresh DEK,
// acknowledgement. Bytes/op is the data re-encrypted.
func BenchmarkRotationReencrypt(b *testing.B) {
	h := newHarness(b)
	inst, key := h.provisionWithKey()
	h.createTopic(inst, "orders", 3)
	produceN(b, h.client(inst, auth.RoleWriter), "orders", "record-with-some-payload-to-encrypt-0123456789abcdef", 16000)
	d := h.deployment(inst.GUID)
	d.mu.Lock()
	size := d.st.SizeBytes()
	d.mu.Unlock()
	b.SetBytes(size)
	b.ResetTimer()
	for b.Loop() {
		h.waitAck(h.kms.act(b, key, ActionRotate)[0])
		eventually(b, "the re-encryption finishes", func() bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			return d.reenc == nil && d.rec.NextDEKID == ""
		})
	}
}
