package broker

import (
	"crypto/tls"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/keyline/keyline/internal/tlstest"
)

func tlsConfigOf(t *testing.T, p tlstest.Pair) *tls.Config {
	t.Helper()
	c, err := tls.LoadX509KeyPair(p.CertFile, p.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{c}, MinVersion: tls.VersionTLS12}
}

// Over TLS a follower forwards to the leader only when the leader presents
// the cluster's own certificate: a forwarded request carries the client's
// credentials, which must not reach a stranger listening at the leader's
// address.
func TestFollowerForwardsOverTLSOnlyToTheClustersCertificate(t *testing.T) {
	dir := t.TempDir()
	cluster := tlstest.Issue(t, dir, "cluster", "127.0.0.1")
	stranger := tlstest.Issue(t, dir, "stranger", "127.0.0.1")
	for _, c := range []struct {
		name   string
		leader tlstest.Pair
		want   int16
	}{{"the cluster's certificate", cluster, 0}, {"a stranger's certificate", stranger, kerr.NotController.Code}} {
		t.Run(c.name, func(t *testing.T) {
			store := newMemStore()
			pl := &testPlacement{leader: 1}
			leader := startBroker(t, store, func(cfg *Config) { cfg.Placement, cfg.TLS = pl, tlsConfigOf(t, c.leader) })
			follower := startBroker(t, store, func(cfg *Config) {
				cfg.NodeID, cfg.Placement, cfg.Follower, cfg.Storage, cfg.TLS = 2, pl, true, &viewStore{st: store}, tlsConfigOf(t, cluster)
			})
			pl.set(1, leader, follower)
			cl, err := kgo.NewClient(kgo.SeedBrokers(follower.Addr().String()), kgo.DialTLSConfig(&tls.Config{RootCAs: cluster.Pool()}),
				kgo.SASL(plain.Auth{User: "token", Pass: managerKey}.AsMechanism()))
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			name := "iam-ServiceId-hog"
			req := kmsg.NewPtrAlterClientQuotasRequest()
			req.Entries = []kmsg.AlterClientQuotasRequestEntry{{
				Entity: []kmsg.AlterClientQuotasRequestEntryEntity{{Type: "user", Name: &name}},
				Ops:    []kmsg.AlterClientQuotasRequestEntryOp{{Key: "consumer_byte_rate", Value: 1 << 20}},
			}}
			resp, err := cl.SeedBrokers()[0].Request(testCtx(t), req)
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.(*kmsg.AlterClientQuotasResponse).Entries[0].ErrorCode; got != c.want {
				t.Fatalf("AlterClientQuotas through the follower: %v, want %v", kerr.ErrorForCode(got), kerr.ErrorForCode(c.want))
			}
			_, stored := store.GetMeta(quotasKey)
			if stored != (c.want == 0) {
				t.Fatalf("the quota stored: %v, want %v", stored, c.want == 0)
			}
		})
	}
}
