package kpapi_test

import (
	"bytes"
	"testing"
)

// BenchmarkServiceWrapUnwrap measures one in-process wrap and unwrap as
// messagehub makes them (service principal, Activity Tracker on), without HTTP.
func BenchmarkServiceWrapUnwrap(b *testing.B) {
	e := newEnv(b)
	key, err := e.client(manager).CreateRootKey(e.ctx, "bench", nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := asService()
	dek := bytes.Repeat([]byte{1}, 32)
	aad := []string{"dep-0001"}
	b.ReportAllocs()
	b.SetParallelism(8) // 16 callers on 2 cores, like deployments sharing a key
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w, err := e.svc.Wrap(ctx, instance, key.ID, dek, aad)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := e.svc.Unwrap(ctx, instance, key.ID, w.Ciphertext, aad); err != nil {
				b.Fatal(err)
			}
		}
	})
}
