package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

// scopedLogins is a LoginChecker over a table of API keys, each with the
// Login IAM would compute from its policies; a test may change them.
type scopedLogins struct {
	mu     sync.Mutex
	logins map[string]Login
}

func (s *scopedLogins) set(key string, l Login) { s.mu.Lock(); defer s.mu.Unlock(); s.logins[key] = l }

func (s *scopedLogins) check(_ context.Context, cr Credentials) (Login, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.logins[cr.Secret]
	if !ok || (cr.Mechanism == saslPlain && cr.User != "token") {
		return Login{}, errors.New("the API key is not valid")
	}
	return l, nil
}

// clusterReader is what every scoped login below needs to connect at all.
var clusterReader = Grant{Type: ClusterResource, Access: Reader}

func matrixLogins() *scopedLogins {
	return &scopedLogins{logins: map[string]Login{
		"instance-reader":  {Access: Reader},
		"instance-writer":  {Access: Writer},
		"instance-manager": {Access: Manager},
		"topic-orders-writer": {Grants: []Grant{clusterReader,
			{Type: TopicResource, Name: "orders", Access: Writer}}},
		"topic-prefix-manager": {Grants: []Grant{clusterReader,
			{Type: TopicResource, Name: "orders-*", Access: Manager}}},
		"group-g1-reader": {Grants: []Grant{clusterReader,
			{Type: GroupResource, Name: "g1", Access: Reader}, {Type: TopicResource, Name: "orders", Access: Reader}}},
		"group-any-manager": {Grants: []Grant{clusterReader,
			{Type: GroupResource, Name: "*", Access: Manager}}},
		"txnid-t1-writer": {Grants: []Grant{clusterReader,
			{Type: TxnIDResource, Name: "t1", Access: Writer}}},
		"cluster-manager": {Grants: []Grant{{Type: ClusterResource, Access: Manager}}},
		"no-cluster-role": {Grants: []Grant{{Type: TopicResource, Name: "*", Access: Manager}}},
	}}
}

// authorized stands for "any answer but an authorization failure" where
// what follows the authorization is another feature's business
// (transactions).
const authorized int16 = -999

type matrixProbe func(ctx context.Context, cl *kgo.Client) (int16, error)

func produceProbe(topic string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		err := cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("v")}).FirstErr()
		return codeOf(err)
	}
}

func codeOf(err error) (int16, error) {
	var ke *kerr.Error
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ke):
		return ke.Code, nil
	}
	return 0, err
}

func listOffsetsProbe(topic string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		req := kmsg.NewPtrListOffsetsRequest()
		req.Topics = []kmsg.ListOffsetsRequestTopic{{Topic: topic, Partitions: []kmsg.ListOffsetsRequestTopicPartition{{Partition: 0, Timestamp: -1}}}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.Topics[0].Partitions[0].ErrorCode, nil
	}
}

func metadataProbe(topic string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		req := kmsg.NewPtrMetadataRequest()
		req.Topics = []kmsg.MetadataRequestTopic{{Topic: kmsg.StringPtr(topic)}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.Topics[0].ErrorCode, nil
	}
}

func createTopicProbe(topic string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		req := kmsg.NewPtrCreateTopicsRequest()
		req.ValidateOnly = true
		req.Topics = []kmsg.CreateTopicsRequestTopic{{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.Topics[0].ErrorCode, nil
	}
}

func growProbe(topic string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		req := kmsg.NewPtrCreatePartitionsRequest()
		req.ValidateOnly = true
		req.Topics = []kmsg.CreatePartitionsRequestTopic{{Topic: topic, Count: 2}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.Topics[0].ErrorCode, nil
	}
}

func deleteRecordsProbe(topic string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		req := kmsg.NewPtrDeleteRecordsRequest()
		req.Topics = []kmsg.DeleteRecordsRequestTopic{{Topic: topic, Partitions: []kmsg.DeleteRecordsRequestTopicPartition{{Partition: 0, Offset: 0}}}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.Topics[0].Partitions[0].ErrorCode, nil
	}
}

func deleteTopicsProbe(topic string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) { return deleteTopicProbe(topic)(ctx, cl) }
}

func commitProbe(group, topic string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		req := kmsg.NewPtrOffsetCommitRequest()
		req.Group, req.Generation = group, -1
		req.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: topic, Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 0}}}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.Topics[0].Partitions[0].ErrorCode, nil
	}
}

func offsetFetchProbe(group string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		req := kmsg.NewPtrOffsetFetchRequest()
		req.Groups = []kmsg.OffsetFetchRequestGroup{{Group: group}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.Groups[0].ErrorCode, nil
	}
}

func describeGroupProbe(group string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		req := kmsg.NewPtrDescribeGroupsRequest()
		req.Groups = []string{group}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.Groups[0].ErrorCode, nil
	}
}

func deleteGroupProbe(group string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		req := kmsg.NewPtrDeleteGroupsRequest()
		req.Groups = []string{group}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.Groups[0].ErrorCode, nil
	}
}

func joinProbe(group string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		req := kmsg.NewPtrJoinGroupRequest()
		req.Group, req.ProtocolType, req.SessionTimeoutMillis, req.RebalanceTimeoutMillis = group, "consumer", 30000, 30000
		req.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: []byte{}}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.ErrorCode, nil
	}
}

func findCoordinatorProbe(typ int8, key string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) {
		req := kmsg.NewPtrFindCoordinatorRequest()
		req.CoordinatorType, req.CoordinatorKey, req.CoordinatorKeys = typ, key, []string{key}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		if len(resp.Coordinators) > 0 {
			return resp.Coordinators[0].ErrorCode, nil
		}
		return resp.ErrorCode, nil
	}
}

func producerIDProbe(txn *string) matrixProbe {
	return func(ctx context.Context, cl *kgo.Client) (int16, error) { return initProducerIDProbe(txn)(ctx, cl) }
}

// TestAuthorizationMatrix checks that policies scoped to topics (by name
// and prefix), groups, transactional ids and the cluster, next to
// whole-instance roles, allow each kind of request exactly as far as their
// role goes, and that a refusal has the Kafka error of its resource type.
func TestAuthorizationMatrix(t *testing.T) {
	logins := matrixLogins()
	tb := startBroker(t, nil, func(c *Config) { c.Login = logins.check })
	for _, name := range []string{"orders", "orders-eu", "payments"} {
		tb.mustCreate(t, name, 1)
	}
	var (
		taf  = kerr.TopicAuthorizationFailed.Code
		gaf  = kerr.GroupAuthorizationFailed.Code
		xaf  = kerr.TransactionalIDAuthorizationFailed.Code
		caf  = kerr.ClusterAuthorizationFailed.Code
		none = int16(0)
	)
	type row struct {
		probe string
		send  matrixProbe
		want  map[string]int16 // by login; every login of matrixLogins but no-cluster-role
	}
	rows := []row{
		{"produce orders", produceProbe("orders"), map[string]int16{"instance-reader": taf, "instance-writer": none, "instance-manager": none,
			"topic-orders-writer": none, "topic-prefix-manager": taf, "group-g1-reader": taf, "group-any-manager": taf, "txnid-t1-writer": taf, "cluster-manager": taf}},
		{"produce orders-eu", produceProbe("orders-eu"), map[string]int16{"instance-reader": taf, "instance-writer": none, "instance-manager": none,
			"topic-orders-writer": taf, "topic-prefix-manager": none, "group-g1-reader": taf, "group-any-manager": taf, "txnid-t1-writer": taf, "cluster-manager": taf}},
		{"list offsets payments", listOffsetsProbe("payments"), map[string]int16{"instance-reader": none, "instance-writer": none, "instance-manager": none,
			"topic-orders-writer": taf, "topic-prefix-manager": taf, "group-g1-reader": taf, "group-any-manager": taf, "txnid-t1-writer": taf, "cluster-manager": taf}},
		{"list offsets orders", listOffsetsProbe("orders"), map[string]int16{"instance-reader": none, "instance-writer": none, "instance-manager": none,
			"topic-orders-writer": none, "topic-prefix-manager": taf, "group-g1-reader": none, "group-any-manager": taf, "txnid-t1-writer": taf, "cluster-manager": taf}},
		{"metadata orders-eu", metadataProbe("orders-eu"), map[string]int16{"instance-reader": none, "instance-writer": none, "instance-manager": none,
			"topic-orders-writer": taf, "topic-prefix-manager": none, "group-g1-reader": taf, "group-any-manager": taf, "txnid-t1-writer": taf, "cluster-manager": taf}},
		{"create topic orders-new", createTopicProbe("orders-new"), map[string]int16{"instance-reader": taf, "instance-writer": taf, "instance-manager": none,
			"topic-orders-writer": taf, "topic-prefix-manager": none, "group-g1-reader": taf, "group-any-manager": taf, "txnid-t1-writer": taf, "cluster-manager": none}},
		{"add partitions orders-eu", growProbe("orders-eu"), map[string]int16{"instance-reader": taf, "instance-writer": taf, "instance-manager": none,
			"topic-orders-writer": taf, "topic-prefix-manager": none, "group-g1-reader": taf, "group-any-manager": taf, "txnid-t1-writer": taf, "cluster-manager": taf}},
		{"delete records orders", deleteRecordsProbe("orders"), map[string]int16{"instance-reader": taf, "instance-writer": taf, "instance-manager": none,
			"topic-orders-writer": taf, "topic-prefix-manager": taf, "group-g1-reader": taf, "group-any-manager": taf, "txnid-t1-writer": taf, "cluster-manager": taf}},
		{"delete topic orders-gone", deleteTopicsProbe("orders-gone"), map[string]int16{"instance-reader": taf, "instance-writer": taf,
			"instance-manager": kerr.UnknownTopicOrPartition.Code, "topic-orders-writer": taf, "topic-prefix-manager": kerr.UnknownTopicOrPartition.Code,
			"group-g1-reader": taf, "group-any-manager": taf, "txnid-t1-writer": taf, "cluster-manager": taf}},
		{"commit g1 on orders", commitProbe("g1", "orders"), map[string]int16{"instance-reader": none, "instance-writer": none, "instance-manager": none,
			"topic-orders-writer": gaf, "topic-prefix-manager": gaf, "group-g1-reader": none, "group-any-manager": taf, "txnid-t1-writer": gaf, "cluster-manager": gaf}},
		{"offset fetch g1", offsetFetchProbe("g1"), map[string]int16{"instance-reader": none, "instance-writer": none, "instance-manager": none,
			"topic-orders-writer": gaf, "topic-prefix-manager": gaf, "group-g1-reader": none, "group-any-manager": none, "txnid-t1-writer": gaf, "cluster-manager": gaf}},
		{"describe group g2", describeGroupProbe("g2"), map[string]int16{"instance-reader": none, "instance-writer": none, "instance-manager": none,
			"topic-orders-writer": gaf, "topic-prefix-manager": gaf, "group-g1-reader": gaf, "group-any-manager": none, "txnid-t1-writer": gaf, "cluster-manager": gaf}},
		{"join group g1", joinProbe("g1"), map[string]int16{"instance-reader": kerr.MemberIDRequired.Code, "instance-writer": kerr.MemberIDRequired.Code,
			"instance-manager": kerr.MemberIDRequired.Code, "topic-orders-writer": gaf, "topic-prefix-manager": gaf, "group-g1-reader": kerr.MemberIDRequired.Code,
			"group-any-manager": kerr.MemberIDRequired.Code, "txnid-t1-writer": gaf, "cluster-manager": gaf}},
		{"delete group g3", deleteGroupProbe("g3"), map[string]int16{"instance-reader": gaf, "instance-writer": gaf, "instance-manager": kerr.GroupIDNotFound.Code,
			"topic-orders-writer": gaf, "topic-prefix-manager": gaf, "group-g1-reader": gaf, "group-any-manager": kerr.GroupIDNotFound.Code, "txnid-t1-writer": gaf, "cluster-manager": gaf}},
		{"find group coordinator g1", findCoordinatorProbe(0, "g1"), map[string]int16{"instance-reader": none, "instance-writer": none, "instance-manager": none,
			"topic-orders-writer": gaf, "topic-prefix-manager": gaf, "group-g1-reader": none, "group-any-manager": none, "txnid-t1-writer": gaf, "cluster-manager": gaf}},
		{"find txn coordinator t1", findCoordinatorProbe(1, "t1"), map[string]int16{"instance-reader": none, "instance-writer": none, "instance-manager": none,
			"topic-orders-writer": xaf, "topic-prefix-manager": xaf, "group-g1-reader": xaf, "group-any-manager": xaf, "txnid-t1-writer": none, "cluster-manager": xaf}},
		{"init producer id t1", producerIDProbe(kmsg.StringPtr("t1")), map[string]int16{"instance-reader": xaf, "instance-writer": authorized, "instance-manager": authorized,
			"topic-orders-writer": xaf, "topic-prefix-manager": xaf, "group-g1-reader": xaf, "group-any-manager": xaf, "txnid-t1-writer": authorized, "cluster-manager": xaf}},
		{"init producer id t2", producerIDProbe(kmsg.StringPtr("t2")), map[string]int16{"instance-reader": xaf, "instance-writer": authorized, "instance-manager": authorized,
			"topic-orders-writer": xaf, "topic-prefix-manager": xaf, "group-g1-reader": xaf, "group-any-manager": xaf, "txnid-t1-writer": xaf, "cluster-manager": xaf}},
		{"idempotent producer id", producerIDProbe(nil), map[string]int16{"instance-reader": caf, "instance-writer": none, "instance-manager": none,
			"topic-orders-writer": none, "topic-prefix-manager": none, "group-g1-reader": caf, "group-any-manager": caf, "txnid-t1-writer": caf, "cluster-manager": none}},
	}
	clients := map[string]*kgo.Client{}
	for key := range logins.logins {
		if key != "no-cluster-role" {
			clients[key] = tb.client(t, key, kgo.DisableIdempotentWrite(), kgo.MaxVersions(kversion.V3_0_0()),
				kgo.RecordRetries(1), kgo.UnknownTopicRetries(1))
		}
	}
	for _, r := range rows {
		if len(r.want) != len(clients) {
			t.Fatalf("%s: the row names %d logins, not %d", r.probe, len(r.want), len(clients))
		}
		for key, want := range r.want {
			t.Run(fmt.Sprintf("%s/%s", r.probe, key), func(t *testing.T) {
				got, err := r.send(testCtx(t), clients[key])
				if err != nil {
					// franz-go sends group and transaction requests to
					// their coordinator, and a refused FindCoordinator
					// ends them with its error.
					if got, err = codeOf(err); err != nil {
						t.Fatal(err)
					}
				}
				switch {
				case want == authorized:
					if got == xaf || got == taf || got == gaf || got == caf {
						t.Fatalf("got %v, want an answer past authorization", kerr.ErrorForCode(got))
					}
				case got != want:
					t.Fatalf("got %v, want %v", kerr.ErrorForCode(got), kerr.ErrorForCode(want))
				}
			})
		}
	}
}

// A login whose policies give no role on the cluster (nor the instance) is
// refused, whatever it may do on topics.
func TestLoginNeedsAClusterRole(t *testing.T) {
	logins := matrixLogins()
	tb := startBroker(t, nil, func(c *Config) { c.Login = logins.check })
	cl := tb.client(t, "no-cluster-role", kgo.SASL(plain.Auth{User: "token", Pass: "no-cluster-role"}.AsMechanism()))
	err := cl.Ping(testCtx(t))
	if !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("got %v, want SASL_AUTHENTICATION_FAILED", err)
	}
}

// Metadata for all topics lists only those the login may read, as Kafka
// leaves out unauthorized topics.
func TestMetadataListsOnlyReadableTopics(t *testing.T) {
	logins := matrixLogins()
	tb := startBroker(t, nil, func(c *Config) { c.Login = logins.check })
	for _, name := range []string{"orders", "orders-eu", "orders-us", "payments"} {
		tb.mustCreate(t, name, 1)
	}
	topics, err := tb.admin(t, "topic-prefix-manager").ListTopics(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := topics.Names(); fmt.Sprint(got) != "[orders-eu orders-us]" {
		t.Fatalf("listed %v, want [orders-eu orders-us]", got)
	}
}

// A revoked topic policy reaches a live connection at the next
// re-authorization sweep.
func TestRevokedTopicGrantReachesLiveConnection(t *testing.T) {
	logins := matrixLogins()
	tb := startBroker(t, nil, func(c *Config) { c.Login, c.Reauthorize = logins.check, time.Hour })
	tb.mustCreate(t, "orders", 1)
	cl := tb.client(t, "topic-orders-writer", kgo.DisableIdempotentWrite(), kgo.RecordRetries(1))
	if code, err := produceProbe("orders")(testCtx(t), cl); err != nil || code != 0 {
		t.Fatalf("before: %v %v", kerr.ErrorForCode(code), err)
	}
	logins.set("topic-orders-writer", Login{Grants: []Grant{clusterReader, {Type: TopicResource, Name: "orders", Access: Reader}}})
	tb.reauthorize(testCtx(t))
	if code, err := produceProbe("orders")(testCtx(t), cl); err != nil || code != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("after: %v %v, want TOPIC_AUTHORIZATION_FAILED", kerr.ErrorForCode(code), err)
	}
}

func BenchmarkAuthorizationCheck(b *testing.B) {
	l := Login{Grants: []Grant{clusterReader}}
	for i := range 20 {
		l.Grants = append(l.Grants, Grant{Type: TopicResource, Name: fmt.Sprintf("team%d-*", i), Access: Writer},
			Grant{Type: TopicResource, Name: fmt.Sprintf("exact-%d", i), Access: Reader})
	}
	a := compileACL(l)
	b.Run("exact", func(b *testing.B) {
		for b.Loop() {
			if !a.allows(TopicResource, "exact-7", Reader) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("prefix of 20", func(b *testing.B) {
		for b.Loop() {
			if !a.allows(TopicResource, "team19-orders", Writer) {
				b.Fatal("refused")
			}
		}
	})
	b.Run("refused", func(b *testing.B) {
		for b.Loop() {
			if a.allows(TopicResource, "payments", Reader) {
				b.Fatal("allowed")
			}
		}
	})
	b.Run("whole instance", func(b *testing.B) {
		w := compileACL(Login{Access: Manager})
		for b.Loop() {
			if !w.allows(TopicResource, "payments", Writer) {
				b.Fatal("refused")
			}
		}
	})
}
