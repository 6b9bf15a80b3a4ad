package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestRetentionDropsOldRecords(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	tb := startBroker(t, nil, func(c *Config) { c.Clock = clock })
	if _, err := tb.CreateTopic(t.Context(), "short", 1, map[string]string{"retention.ms": "60000"}); err != nil {
		t.Fatal(err)
	}
	tb.mustCreate(t, "long", 1)
	cl := tb.client(t, writerKey)
	for _, topic := range []string{"short", "long"} {
		produceN(t, cl, topic, 0, 5) // two batches: a store keeps its newest
		produceN(t, cl, topic, 5, 5)
	}

	tb.applyRetention()
	if start := startOffset(tb, "short"); start != 0 {
		t.Fatalf("fresh records dropped: start offset %d", start)
	}
	clock.Advance(2 * time.Minute)
	tb.applyRetention()
	if start := startOffset(tb, "short"); start != 5 {
		t.Fatalf("start offset %d after retention, want 5 (the older batch gone)", start)
	}
	if start := startOffset(tb, "long"); start != 0 {
		t.Fatalf("a topic with the 7-day default lost records: start %d", start)
	}
}

func startOffset(tb testBroker, topic string) int64 {
	return tb.topics.partitions(tb.topics.byNameOrNil(topic))[0].log.StartOffset()
}

func TestDeleteRecordsMovesStartOffset(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "scratch", 1)
	produceN(t, tb.client(t, writerKey), "scratch", 0, 10)
	offsets := kadmOffsets("scratch", 0, 10)
	for _, tc := range []struct {
		key  string
		want error
	}{{writerKey, kerr.TopicAuthorizationFailed}, {managerKey, nil}} {
		resp, err := tb.admin(t, tc.key).DeleteRecords(testCtx(t), offsets)
		if err != nil {
			t.Fatal(err)
		}
		if got := resp.Error(); !errors.Is(got, tc.want) {
			t.Fatalf("DeleteRecords as %s: %v, want %v", tc.key, got, tc.want)
		}
	}
	if start := startOffset(tb, "scratch"); start != 10 {
		t.Fatalf("start offset %d, want 10", start)
	}
}

func TestGroupMemberThatStopsHeartbeatingIsRemoved(t *testing.T) {
	clock := &fakeClock{now: time.Now()}
	tb := startBroker(t, nil, func(c *Config) { c.Clock = clock })
	cl := tb.client(t, readerKey)
	ctx := testCtx(t)
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group, join.SessionTimeoutMillis, join.RebalanceTimeoutMillis = "quiet", 10000, 10000
	join.ProtocolType = "consumer"
	join.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range"}}
	resp, err := join.RequestWith(ctx, cl)
	if err != nil || resp.ErrorCode != kerr.MemberIDRequired.Code {
		t.Fatalf("first join: %v code %d, want MEMBER_ID_REQUIRED", err, resp.ErrorCode)
	}
	join.MemberID = resp.MemberID
	if resp, err = join.RequestWith(ctx, cl); err != nil || resp.ErrorCode != 0 || resp.LeaderID != join.MemberID {
		t.Fatalf("second join: %v %+v", err, resp)
	}
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.Generation, sync.MemberID = "quiet", resp.Generation, resp.MemberID
	sync.GroupAssignment = []kmsg.SyncGroupRequestGroupAssignment{{MemberID: resp.MemberID, MemberAssignment: []byte("plan")}}
	sresp, err := sync.RequestWith(ctx, cl)
	if err != nil || sresp.ErrorCode != 0 || string(sresp.MemberAssignment) != "plan" {
		t.Fatalf("sync: %v %+v", err, sresp)
	}
	if v := tb.groups.describe("quiet"); v.state != groupStable || len(v.members) != 1 {
		t.Fatalf("group %s with %d members, want Stable with 1", v.state, len(v.members))
	}
	clock.Advance(11 * time.Second)
	waitFor(t, "the silent member to be removed", func() bool { return tb.groups.describe("quiet").state == groupEmpty })
	hb := kmsg.NewPtrHeartbeatRequest()
	hb.Group, hb.Generation, hb.MemberID = "quiet", resp.Generation, resp.MemberID
	if hresp, err := hb.RequestWith(ctx, cl); err != nil || hresp.ErrorCode != kerr.UnknownMemberID.Code {
		t.Fatalf("heartbeat after removal: %v code %d, want UNKNOWN_MEMBER_ID", err, hresp.ErrorCode)
	}
}

func TestFetchWaitsForData(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "quiet", 1)
	cl := tb.client(t, readerKey)
	id := tb.topics.byNameOrNil("quiet").id
	fetch := kmsg.NewPtrFetchRequest()
	fetch.MaxWaitMillis, fetch.MinBytes, fetch.MaxBytes = 120000, 1, 1<<20
	ft := kmsg.NewFetchRequestTopic()
	ft.Topic, ft.TopicID = "quiet", id
	ft.Partitions = []kmsg.FetchRequestTopicPartition{{Partition: 0, FetchOffset: 0, PartitionMaxBytes: 1 << 20, CurrentLeaderEpoch: -1, LogStartOffset: -1}}
	fetch.Topics = append(fetch.Topics, ft)
	got := make(chan *kmsg.FetchResponse, 1)
	go func() {
		resp, err := fetch.RequestWith(testCtx(t), cl)
		if err != nil {
			t.Error(err)
		}
		got <- resp
	}()
	produceN(t, tb.client(t, writerKey), "quiet", 0, 1)
	select {
	case resp := <-got: // long before the two-minute wait ends
		if resp == nil || len(resp.Topics[0].Partitions[0].RecordBatches) == 0 {
			t.Fatalf("woken fetch returned no records: %+v", resp)
		}
	case <-testCtx(t).Done():
		t.Fatal("the waiting fetch was not woken by new data")
	}
}

func TestSASLSSLWithTLSConfig(t *testing.T) {
	cert := selfSigned(t)
	tb := startBroker(t, nil, func(c *Config) {
		c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	tb.mustCreate(t, "secure", 1)
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	cl := tb.client(t, writerKey, kgo.DialTLSConfig(&tls.Config{RootCAs: pool, ServerName: "localhost"}), kgo.DefaultProduceTopic("secure"))
	if err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("over tls")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	plain := tb.client(t, writerKey)
	if err := plain.Ping(testCtx(t)); err == nil {
		t.Fatal("a plaintext client talked to the TLS listener")
	}
}

func selfSigned(t *testing.T) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
