package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// testPlacement is a Placement a test changes: who serves and who leads.
type testPlacement struct {
	mu      sync.Mutex
	brokers []BrokerAddr
	leader  int32
}

func (p *testPlacement) Brokers() []BrokerAddr {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.brokers)
}

func (p *testPlacement) Leader() int32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leader
}

func (p *testPlacement) set(leader int32, brokers ...testBroker) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.leader, p.brokers = leader, nil
	for _, b := range brokers {
		p.brokers = append(p.brokers, b.self())
	}
}

// viewStore is a follower's storage over the leader's: it reads what the
// leader stored and refuses (and counts) every write, as objlog's View.
// It records the metadata keys and prefixes the follower reads.
type viewStore struct {
	st     *memStore
	writes atomic.Int64
	mu     sync.Mutex
	read   []string
}

var errReadOnly = errors.New("viewstore: read-only")

func (v *viewStore) refuse() error { v.writes.Add(1); return errReadOnly }

func (v *viewStore) reads(key string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.read = append(v.read, key)
}

func (v *viewStore) GetMeta(key string) ([]byte, bool)   { v.reads(key); return v.st.GetMeta(key) }
func (v *viewStore) ListMeta(p string) map[string][]byte { v.reads(p); return v.st.ListMeta(p) }
func (v *viewStore) PutMeta(string, []byte) error        { return v.refuse() }
func (v *viewStore) DeleteMeta(string) error             { return v.refuse() }
func (v *viewStore) DropPartition(string) error          { return v.refuse() }

func (v *viewStore) Partition(name string, create bool) (PartitionLog, error) {
	if create {
		return nil, v.refuse()
	}
	p, err := v.st.Partition(name, false)
	if err != nil {
		return nil, err
	}
	return viewPartition{p, v}, nil
}

type viewPartition struct {
	PartitionLog
	v *viewStore
}

func (p viewPartition) AppendAsync(context.Context, seglog.BatchMeta, []byte) (int64, func() error, error) {
	return 0, nil, p.v.refuse()
}
func (p viewPartition) DeleteBefore(int64) error             { return p.v.refuse() }
func (p viewPartition) Retain(time.Time, int64, int64) error { return p.v.refuse() }
func (p viewPartition) Read(context.Context, int64, int32) ([]seglog.StoredBatch, error) {
	return nil, p.v.refuse() // a follower sends its clients to the leader
}

// testCluster is a leader (node 1) and a follower (node 2) over one store.
type testCluster struct {
	leader, follower testBroker
	view             *viewStore
	placement        *testPlacement
}

func startCluster(t *testing.T, mod ...func(*Config)) testCluster {
	t.Helper()
	store := newMemStore()
	pl := &testPlacement{leader: 1}
	leader := startBroker(t, store, append([]func(*Config){func(c *Config) { c.Placement = pl }}, mod...)...)
	view := &viewStore{st: store}
	follower := startBroker(t, store, append([]func(*Config){func(c *Config) {
		c.NodeID, c.Placement, c.Follower, c.Storage = 2, pl, true, view
	}}, mod...)...)
	pl.set(1, leader, follower)
	return testCluster{leader: leader, follower: follower, view: view, placement: pl}
}

// checkFollowerQuiet fails the test if the follower tried to write, or
// read metadata that FollowerReads says followers do not read (a store
// does not tell them of its changes).
func (tc testCluster) checkFollowerQuiet(t *testing.T) {
	t.Helper()
	if w := tc.view.writes.Load(); w != 0 {
		t.Fatalf("the follower tried %d writes", w)
	}
	tc.view.mu.Lock()
	defer tc.view.mu.Unlock()
	for _, k := range tc.view.read {
		if !FollowerReads(k) {
			t.Fatalf("the follower read metadata %q, which FollowerReads leaves out", k)
		}
	}
}

// mustCreate creates a topic through the leader and shows it to the
// follower, as the change feed does.
func (tc testCluster) mustCreate(t *testing.T, name string, partitions int32) {
	t.Helper()
	tc.leader.mustCreate(t, name, partitions)
	if err := tc.follower.ReloadTopics(); err != nil {
		t.Fatal(err)
	}
}

func TestClientBootstrappedAtFollowerProducesAndConsumesThroughLeader(t *testing.T) {
	tc := startCluster(t)
	tc.mustCreate(t, "orders", 3)
	ctx := testCtx(t)
	seed := kgo.SeedBrokers(tc.follower.Addr().String())
	prod := tc.follower.client(t, writerKey, seed, kgo.DefaultProduceTopic("orders"))
	const n = 50
	for i := range n {
		if err := prod.ProduceSync(ctx, &kgo.Record{Key: []byte(strconv.Itoa(i)), Value: []byte(fmt.Sprintf("order-%d", i))}).FirstErr(); err != nil {
			t.Fatalf("produce %d: %v", i, err)
		}
	}
	cons := tc.follower.client(t, readerKey, seed, kgo.ConsumeTopics("orders"), kgo.ConsumerGroup("billing"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	got := consume(t, cons, n)
	seen := map[string]bool{}
	for _, r := range got {
		seen[string(r.Value)] = true
	}
	if len(seen) != n {
		t.Fatalf("consumed %d distinct records, want %d", len(seen), n)
	}
	if err := cons.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatalf("commit through the follower's bootstrap: %v", err)
	}
	var committed int64
	for _, o := range tc.leader.groups.committedOffsets("billing") {
		committed += o.Offset
	}
	if committed != n {
		t.Fatalf("the leader holds commits summing to %d, want %d", committed, n)
	}
	tc.checkFollowerQuiet(t)
}

func TestKcatBootstrappedAtFollowerProducesAndConsumes(t *testing.T) {
	tc := startCluster(t)
	tc.mustCreate(t, "telemetry", 2)
	if _, err := kcat(t, tc.follower, writerKey, "a\nb\nc\n", "-P", "-t", "telemetry"); err != nil {
		t.Fatal(err)
	}
	out, err := kcat(t, tc.follower, readerKey, "", "-C", "-t", "telemetry", "-o", "beginning", "-e", "-q")
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedLines(out); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("kcat consumed %q", got)
	}
	tc.checkFollowerQuiet(t)
}

// ask sends req at its version over a logged-in raw connection and reads
// the answer.
func (rc *rawConn) ask(req kmsg.Request) kmsg.Response {
	rc.t.Helper()
	rc.send(req, 42)
	resp := req.ResponseKind()
	resp.SetVersion(req.GetVersion())
	if err := rc.recv(resp, req.IsFlexible() && req.Key() != apiVersionsKey); err != nil {
		rc.t.Fatalf("%T v%d: %v", req, req.GetVersion(), err)
	}
	return resp
}

func TestFollowerSendsEveryRequestThatNeedsTheLeaderToIt(t *testing.T) {
	tc := startCluster(t)
	tc.mustCreate(t, "orders", 1)
	txn, group := "txn-1", "billing"
	const (
		notLeader      = 6  // NOT_LEADER_OR_FOLLOWER
		notCoordinator = 16 // NOT_COORDINATOR
		notController  = 41 // NOT_CONTROLLER
	)
	type probe struct {
		name string
		req  func() kmsg.Request
		code func(kmsg.Response) int16
		want int16
	}
	str := kmsg.StringPtr
	probes := []probe{
		{"produce", func() kmsg.Request {
			r := kmsg.NewPtrProduceRequest()
			r.Version, r.Acks, r.TimeoutMillis = 9, -1, 5000
			r.Topics = []kmsg.ProduceRequestTopic{{Topic: "orders", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: []byte{0}}}}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.ProduceResponse).Topics[0].Partitions[0].ErrorCode }, notLeader},
		{"fetch", func() kmsg.Request {
			r := kmsg.NewPtrFetchRequest()
			r.Version, r.MaxWaitMillis, r.MaxBytes = 12, 5000, 1<<20
			r.Topics = []kmsg.FetchRequestTopic{{Topic: "orders", Partitions: []kmsg.FetchRequestTopicPartition{{Partition: 0, PartitionMaxBytes: 1 << 20}}}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.FetchResponse).Topics[0].Partitions[0].ErrorCode }, notLeader},
		{"list offsets", func() kmsg.Request {
			r := kmsg.NewPtrListOffsetsRequest()
			r.Version = 7
			r.Topics = []kmsg.ListOffsetsRequestTopic{{Topic: "orders", Partitions: []kmsg.ListOffsetsRequestTopicPartition{{Partition: 0, Timestamp: -1}}}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.ListOffsetsResponse).Topics[0].Partitions[0].ErrorCode }, notLeader},
		{"delete records", func() kmsg.Request {
			r := kmsg.NewPtrDeleteRecordsRequest()
			r.Version = 2
			r.Topics = []kmsg.DeleteRecordsRequestTopic{{Topic: "orders", Partitions: []kmsg.DeleteRecordsRequestTopicPartition{{Partition: 0, Offset: -1}}}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.DeleteRecordsResponse).Topics[0].Partitions[0].ErrorCode }, notLeader},
		{"offset for leader epoch", func() kmsg.Request {
			r := kmsg.NewPtrOffsetForLeaderEpochRequest()
			r.Version, r.ReplicaID = 4, -1
			r.Topics = []kmsg.OffsetForLeaderEpochRequestTopic{{Topic: "orders", Partitions: []kmsg.OffsetForLeaderEpochRequestTopicPartition{{Partition: 0, LeaderEpoch: 0}}}}
			return r
		}, func(r kmsg.Response) int16 {
			return r.(*kmsg.OffsetForLeaderEpochResponse).Topics[0].Partitions[0].ErrorCode
		}, notLeader},
		{"unknown topic stays unknown", func() kmsg.Request {
			r := kmsg.NewPtrListOffsetsRequest()
			r.Version = 7
			r.Topics = []kmsg.ListOffsetsRequestTopic{{Topic: "nope", Partitions: []kmsg.ListOffsetsRequestTopicPartition{{Partition: 0, Timestamp: -1}}}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.ListOffsetsResponse).Topics[0].Partitions[0].ErrorCode }, kerr.UnknownTopicOrPartition.Code},
		{"join group", func() kmsg.Request {
			r := kmsg.NewPtrJoinGroupRequest()
			r.Version, r.Group, r.SessionTimeoutMillis, r.RebalanceTimeoutMillis, r.ProtocolType = 5, group, 10000, 10000, "consumer"
			r.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range"}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.JoinGroupResponse).ErrorCode }, notCoordinator},
		{"sync group", func() kmsg.Request {
			r := kmsg.NewPtrSyncGroupRequest()
			r.Version, r.Group, r.Generation, r.MemberID = 3, group, 1, "m"
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.SyncGroupResponse).ErrorCode }, notCoordinator},
		{"heartbeat", func() kmsg.Request {
			r := kmsg.NewPtrHeartbeatRequest()
			r.Version, r.Group, r.Generation, r.MemberID = 3, group, 1, "m"
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.HeartbeatResponse).ErrorCode }, notCoordinator},
		{"leave group v3", func() kmsg.Request {
			r := kmsg.NewPtrLeaveGroupRequest()
			r.Version, r.Group = 3, group
			r.Members = []kmsg.LeaveGroupRequestMember{{MemberID: "m"}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.LeaveGroupResponse).ErrorCode }, notCoordinator},
		{"offset commit", func() kmsg.Request {
			r := kmsg.NewPtrOffsetCommitRequest()
			r.Version, r.Group, r.Generation = 8, group, -1
			r.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "orders", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 1}}}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode }, notCoordinator},
		{"offset fetch v1", func() kmsg.Request {
			r := kmsg.NewPtrOffsetFetchRequest()
			r.Version, r.Group = 1, group
			r.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: "orders", Partitions: []int32{0}}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.OffsetFetchResponse).Topics[0].Partitions[0].ErrorCode }, notCoordinator},
		{"offset fetch v7", func() kmsg.Request {
			r := kmsg.NewPtrOffsetFetchRequest()
			r.Version, r.Group = 7, group
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.OffsetFetchResponse).ErrorCode }, notCoordinator},
		{"offset fetch v8", func() kmsg.Request {
			r := kmsg.NewPtrOffsetFetchRequest()
			r.Version = 8
			r.Groups = []kmsg.OffsetFetchRequestGroup{{Group: group}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.OffsetFetchResponse).Groups[0].ErrorCode }, notCoordinator},
		{"describe groups", func() kmsg.Request {
			r := kmsg.NewPtrDescribeGroupsRequest()
			r.Version, r.Groups = 5, []string{group}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.DescribeGroupsResponse).Groups[0].ErrorCode }, notCoordinator},
		{"delete groups", func() kmsg.Request {
			r := kmsg.NewPtrDeleteGroupsRequest()
			r.Version, r.Groups = 2, []string{group}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.DeleteGroupsResponse).Groups[0].ErrorCode }, notCoordinator},
		{"offset delete", func() kmsg.Request {
			r := kmsg.NewPtrOffsetDeleteRequest()
			r.Group = group
			r.Topics = []kmsg.OffsetDeleteRequestTopic{{Topic: "orders", Partitions: []kmsg.OffsetDeleteRequestTopicPartition{{Partition: 0}}}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.OffsetDeleteResponse).ErrorCode }, notCoordinator},
		{"init producer id, idempotent", func() kmsg.Request {
			r := kmsg.NewPtrInitProducerIDRequest()
			r.Version, r.ProducerID, r.ProducerEpoch = 4, -1, -1
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.InitProducerIDResponse).ErrorCode }, notCoordinator},
		{"init producer id, transactional", func() kmsg.Request {
			r := kmsg.NewPtrInitProducerIDRequest()
			r.Version, r.TransactionalID, r.TransactionTimeoutMillis, r.ProducerID, r.ProducerEpoch = 4, &txn, 60000, -1, -1
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.InitProducerIDResponse).ErrorCode }, notCoordinator},
		{"add partitions to txn", func() kmsg.Request {
			r := kmsg.NewPtrAddPartitionsToTxnRequest()
			r.Version, r.TransactionalID = 3, txn
			r.Topics = []kmsg.AddPartitionsToTxnRequestTopic{{Topic: "orders", Partitions: []int32{0}}}
			return r
		}, func(r kmsg.Response) int16 {
			return r.(*kmsg.AddPartitionsToTxnResponse).Topics[0].Partitions[0].ErrorCode
		}, notCoordinator},
		{"add offsets to txn", func() kmsg.Request {
			r := kmsg.NewPtrAddOffsetsToTxnRequest()
			r.Version, r.TransactionalID, r.Group = 3, txn, group
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.AddOffsetsToTxnResponse).ErrorCode }, notCoordinator},
		{"end txn", func() kmsg.Request {
			r := kmsg.NewPtrEndTxnRequest()
			r.Version, r.TransactionalID, r.Commit = 3, txn, true
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.EndTxnResponse).ErrorCode }, notCoordinator},
		{"txn offset commit", func() kmsg.Request {
			r := kmsg.NewPtrTxnOffsetCommitRequest()
			r.Version, r.TransactionalID, r.Group, r.Generation = 3, txn, group, -1
			r.Topics = []kmsg.TxnOffsetCommitRequestTopic{{Topic: "orders", Partitions: []kmsg.TxnOffsetCommitRequestTopicPartition{{Partition: 0, Offset: 1}}}}
			return r
		}, func(r kmsg.Response) int16 {
			return r.(*kmsg.TxnOffsetCommitResponse).Topics[0].Partitions[0].ErrorCode
		}, notCoordinator},
		{"create topics", func() kmsg.Request {
			r := kmsg.NewPtrCreateTopicsRequest()
			r.Version, r.TimeoutMillis = 5, 5000
			r.Topics = []kmsg.CreateTopicsRequestTopic{{Topic: "fresh", NumPartitions: 1, ReplicationFactor: -1}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.CreateTopicsResponse).Topics[0].ErrorCode }, notController},
		{"delete topics", func() kmsg.Request {
			r := kmsg.NewPtrDeleteTopicsRequest()
			r.Version, r.TopicNames = 4, []string{"orders"}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.DeleteTopicsResponse).Topics[0].ErrorCode }, notController},
		{"create partitions", func() kmsg.Request {
			r := kmsg.NewPtrCreatePartitionsRequest()
			r.Version = 2
			r.Topics = []kmsg.CreatePartitionsRequestTopic{{Topic: "orders", Count: 4}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.CreatePartitionsResponse).Topics[0].ErrorCode }, notController},
		// Clients send these to any broker, which forwards them (KIP-590).
		{"alter configs, forwarded to the leader", func() kmsg.Request {
			r := kmsg.NewPtrAlterConfigsRequest()
			r.Version = 1
			r.Resources = []kmsg.AlterConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "orders",
				Configs: []kmsg.AlterConfigsRequestResourceConfig{{Name: "retention.ms", Value: str("60000")}}}}
			return r
		}, func(r kmsg.Response) int16 { return r.(*kmsg.AlterConfigsResponse).Resources[0].ErrorCode }, 0},
		{"incremental alter configs, forwarded to the leader", func() kmsg.Request {
			r := kmsg.NewPtrIncrementalAlterConfigsRequest()
			r.Version = 1
			r.Resources = []kmsg.IncrementalAlterConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "orders",
				Configs: []kmsg.IncrementalAlterConfigsRequestResourceConfig{{Name: "retention.ms", Value: str("60000")}}}}
			return r
		}, func(r kmsg.Response) int16 {
			return r.(*kmsg.IncrementalAlterConfigsResponse).Resources[0].ErrorCode
		}, 0},
		{"describe configs is served", func() kmsg.Request {
			r := kmsg.NewPtrDescribeConfigsRequest()
			r.Version = 4
			r.Resources = []kmsg.DescribeConfigsRequestResource{{ResourceType: kmsg.ConfigResourceTypeTopic, ResourceName: "orders"}}
			return r
		}, func(r kmsg.Response) int16 {
			res := r.(*kmsg.DescribeConfigsResponse).Resources[0]
			if len(res.Configs) == 0 {
				return -1
			}
			return res.ErrorCode
		}, 0},
	}
	named := map[string]probe{}
	rc := dialRaw(t, tc.follower)
	rc.login(managerKey)
	for _, p := range probes {
		named[p.name] = p
		if got := p.code(rc.ask(p.req())); got != p.want {
			t.Errorf("%s: code %d (%v), want %d", p.name, got, kerr.ErrorForCode(got), p.want)
		}
	}

	// Authorization comes first: a reader is refused as it would be by
	// the leader, not sent there.
	rc = dialRaw(t, tc.follower)
	rc.login(readerKey)
	for _, name := range []string{"produce", "create topics", "delete records"} {
		p := named[name]
		if got := p.code(rc.ask(p.req())); got != kerr.TopicAuthorizationFailed.Code {
			t.Errorf("reader's %s: code %d (%v), want TOPIC_AUTHORIZATION_FAILED", name, got, kerr.ErrorForCode(got))
		}
	}
	del := kmsg.NewPtrDeleteGroupsRequest()
	del.Version, del.Groups = 2, []string{group}
	if got := rc.ask(del).(*kmsg.DeleteGroupsResponse).Groups[0].ErrorCode; got != kerr.GroupAuthorizationFailed.Code {
		t.Errorf("reader's delete groups: code %d, want GROUP_AUTHORIZATION_FAILED", got)
	}

	// ListGroups lists the groups the broker coordinates: none.
	tc.leader.groups.commit(group, -1, "", map[offsetKey]committed{{tc.leader.topics.byNameOrNil("orders").id, 0}: {Offset: 1}})
	lg := kmsg.NewPtrListGroupsRequest()
	lg.Version = 4
	if resp := rc.ask(lg).(*kmsg.ListGroupsResponse); resp.ErrorCode != 0 || len(resp.Groups) != 0 {
		t.Errorf("follower's ListGroups: code %d, %d groups; want none", resp.ErrorCode, len(resp.Groups))
	}
	tc.checkFollowerQuiet(t)
}

func TestMetadataAndFindCoordinatorNameTheLeader(t *testing.T) {
	tc := startCluster(t)
	tc.mustCreate(t, "orders", 2)
	leaderAddr := tc.leader.self()
	for _, tb := range []testBroker{tc.leader, tc.follower} {
		rc := dialRaw(t, tb)
		rc.login(readerKey)
		md := kmsg.NewPtrMetadataRequest()
		md.Version = 12
		resp := rc.ask(md).(*kmsg.MetadataResponse)
		var ids []int32
		for _, b := range resp.Brokers {
			ids = append(ids, b.NodeID)
		}
		if !slices.Equal(ids, []int32{1, 2}) || resp.ControllerID != 1 {
			t.Fatalf("node %d: brokers %v, controller %d; want [1 2] and 1", tb.cfg.NodeID, ids, resp.ControllerID)
		}
		for _, p := range resp.Topics[0].Partitions {
			if p.ErrorCode != 0 || p.Leader != 1 || !slices.Equal(p.Replicas, []int32{1}) || !slices.Equal(p.ISR, []int32{1}) {
				t.Fatalf("node %d: partition %+v, want led by node 1", tb.cfg.NodeID, p)
			}
		}
		dc := kmsg.NewPtrDescribeClusterRequest()
		dcr := rc.ask(dc).(*kmsg.DescribeClusterResponse)
		if len(dcr.Brokers) != 2 || dcr.ControllerID != 1 {
			t.Fatalf("node %d: DescribeCluster lists %d brokers, controller %d; want 2 and 1", tb.cfg.NodeID, len(dcr.Brokers), dcr.ControllerID)
		}
		for _, typ := range []int8{0, 1} {
			fc := kmsg.NewPtrFindCoordinatorRequest()
			fc.Version, fc.CoordinatorKey, fc.CoordinatorType = 3, "g", typ
			r3 := rc.ask(fc).(*kmsg.FindCoordinatorResponse)
			fc = kmsg.NewPtrFindCoordinatorRequest()
			fc.Version, fc.CoordinatorKeys, fc.CoordinatorType = 4, []string{"g", "h"}, typ
			r4 := rc.ask(fc).(*kmsg.FindCoordinatorResponse)
			got := []BrokerAddr{{r3.NodeID, r3.Host, r3.Port}}
			for _, c := range r4.Coordinators {
				got = append(got, BrokerAddr{c.NodeID, c.Host, c.Port})
			}
			if r3.ErrorCode != 0 || len(r4.Coordinators) != 2 || slices.ContainsFunc(got, func(a BrokerAddr) bool { return a != leaderAddr }) {
				t.Fatalf("node %d type %d: coordinators %v (code %d), want %v", tb.cfg.NodeID, typ, got, r3.ErrorCode, leaderAddr)
			}
		}
	}

	// No leader: clients are told to wait and ask again.
	tc.placement.set(-1, tc.leader, tc.follower)
	rc := dialRaw(t, tc.follower)
	rc.login(readerKey)
	md := kmsg.NewPtrMetadataRequest()
	md.Version = 12
	resp := rc.ask(md).(*kmsg.MetadataResponse)
	if resp.ControllerID != -1 || resp.Topics[0].Partitions[0].ErrorCode != kerr.LeaderNotAvailable.Code || resp.Topics[0].Partitions[0].Leader != -1 {
		t.Fatalf("without a leader: controller %d, partition %+v", resp.ControllerID, resp.Topics[0].Partitions[0])
	}
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.Version, fc.CoordinatorKeys = 4, []string{"g"}
	if got := rc.ask(fc).(*kmsg.FindCoordinatorResponse).Coordinators[0].ErrorCode; got != kerr.CoordinatorNotAvailable.Code {
		t.Fatalf("FindCoordinator without a leader: code %d, want COORDINATOR_NOT_AVAILABLE", got)
	}
}

func TestFollowerSeesTopicsAfterReloadAndRunsNoBackgroundWrites(t *testing.T) {
	tc := startCluster(t, func(c *Config) { c.RetentionInterval, c.CompactionInterval = 10*time.Millisecond, 10*time.Millisecond })
	if _, err := tc.leader.CreateTopic(t.Context(), "short", 1, map[string]string{"retention.ms": "1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.follower.Topic(t.Context(), "short"); err == nil {
		t.Fatal("the follower knew the topic before reloading")
	}
	if err := tc.follower.ReloadTopics(); err != nil {
		t.Fatal(err)
	}
	info, err := tc.follower.Topic(t.Context(), "short")
	if err != nil || info.Configs["retention.ms"] != "1" {
		t.Fatalf("after reload: %+v, %v", info, err)
	}
	// Changes through the Go API are the leader's.
	if _, err := tc.follower.CreateTopic(t.Context(), "other", 1, nil); err == nil {
		t.Fatal("a follower created a topic")
	}
	if err := tc.follower.DeleteTopic(t.Context(), "short"); err == nil {
		t.Fatal("a follower deleted a topic")
	}
	// The leader grows it and deletes records; the follower follows.
	if err := tc.leader.topics.grow(tc.leader.topics.byNameOrNil("short"), 3, 10, false); err != nil {
		t.Fatal(err)
	}
	if err := tc.follower.ReloadTopics(); err != nil {
		t.Fatal(err)
	}
	if info, _ := tc.follower.Topic(t.Context(), "short"); info.Partitions != 3 {
		t.Fatalf("follower sees %d partitions, want 3", info.Partitions)
	}
	cl := tc.leader.client(t, writerKey, kgo.RecordPartitioner(kgo.ManualPartitioner()))
	produceN(t, cl, "short", 0, 3)
	produceN(t, cl, "short", 3, 3)
	// Many retention and compaction passes of both brokers.
	deadline := time.Now().Add(10 * time.Second)
	for startOffset(tc.leader, "short") == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if startOffset(tc.leader, "short") == 0 {
		t.Fatal("the leader's retention never ran")
	}
	time.Sleep(100 * time.Millisecond)
	tc.checkFollowerQuiet(t)
	if err := tc.leader.DeleteTopic(t.Context(), "short"); err != nil {
		t.Fatal(err)
	}
	if err := tc.follower.ReloadTopics(); err != nil {
		t.Fatal(err)
	}
	if len(tc.follower.Topics(t.Context())) != 0 {
		t.Fatal("the follower still lists a deleted topic")
	}
}

// joinGroup joins group as a new member over rc and returns the member id
// and generation.
func joinGroup(t *testing.T, rc *rawConn, group string) (string, int32) {
	t.Helper()
	join := func(id string) *kmsg.JoinGroupResponse {
		r := kmsg.NewPtrJoinGroupRequest()
		r.Version, r.Group, r.MemberID, r.SessionTimeoutMillis, r.RebalanceTimeoutMillis, r.ProtocolType = 5, group, id, 30000, 1000, "consumer"
		r.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range"}}
		return rc.ask(r).(*kmsg.JoinGroupResponse)
	}
	resp := join("")
	if resp.ErrorCode == kerr.MemberIDRequired.Code {
		resp = join(resp.MemberID)
	}
	if resp.ErrorCode != 0 {
		t.Fatalf("join: %v", kerr.ErrorForCode(resp.ErrorCode))
	}
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Version, sync.Group, sync.MemberID, sync.Generation = 3, group, resp.MemberID, resp.Generation
	sync.GroupAssignment = []kmsg.SyncGroupRequestGroupAssignment{{MemberID: resp.MemberID}}
	if code := rc.ask(sync).(*kmsg.SyncGroupResponse).ErrorCode; code != 0 {
		t.Fatalf("sync: %v", kerr.ErrorForCode(code))
	}
	return resp.MemberID, resp.Generation
}

func commitOffset(rc *rawConn, group, member string, generation int32, offset int64) int16 {
	r := kmsg.NewPtrOffsetCommitRequest()
	r.Version, r.Group, r.MemberID, r.Generation = 8, group, member, generation
	r.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "orders", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: offset}}}}
	return rc.ask(r).(*kmsg.OffsetCommitResponse).Topics[0].Partitions[0].ErrorCode
}

func TestNewLeaderKeepsCommittedOffsetsAndStartsAHigherGeneration(t *testing.T) {
	tc := startCluster(t)
	tc.mustCreate(t, "orders", 1)
	rc := dialRaw(t, tc.leader)
	rc.login(readerKey)
	var member string
	var generation int32
	for range 3 { // join, leave, join again: a few generations
		member, generation = joinGroup(t, rc, "billing")
		leave := kmsg.NewPtrLeaveGroupRequest()
		leave.Version, leave.Group, leave.Members = 3, "billing", []kmsg.LeaveGroupRequestMember{{MemberID: member}}
		rc.ask(leave)
	}
	member, generation = joinGroup(t, rc, "billing")
	if code := commitOffset(rc, "billing", member, generation, 7); code != 0 {
		t.Fatalf("commit: %v", kerr.ErrorForCode(code))
	}

	// The old leader goes; node 2 leads over the same storage.
	tc.leader.Close()
	tc.follower.Close()
	pl := tc.placement
	next := startBroker(t, tc.leader.store, func(c *Config) { c.NodeID, c.Placement = 2, pl })
	pl.set(2, next)

	rc = dialRaw(t, next)
	rc.login(readerKey)
	fetch := kmsg.NewPtrOffsetFetchRequest()
	fetch.Version, fetch.Group = 7, "billing"
	fetch.Topics = []kmsg.OffsetFetchRequestTopic{{Topic: "orders", Partitions: []int32{0}}}
	if got := rc.ask(fetch).(*kmsg.OffsetFetchResponse).Topics[0].Partitions[0]; got.ErrorCode != 0 || got.Offset != 7 {
		t.Fatalf("the new leader's committed offset: %d (code %d), want 7", got.Offset, got.ErrorCode)
	}
	// The old generation's member cannot commit into the new group.
	if code := commitOffset(rc, "billing", member, generation, 9); code == 0 {
		t.Fatal("a member of the old leader's generation committed")
	}
	_, newGeneration := joinGroup(t, rc, "billing")
	if newGeneration <= generation {
		t.Fatalf("the new leader's generation is %d, not past the old one's %d", newGeneration, generation)
	}
	// FindCoordinator names the new leader.
	fc := kmsg.NewPtrFindCoordinatorRequest()
	fc.Version, fc.CoordinatorKeys = 4, []string{"billing"}
	if c := rc.ask(fc).(*kmsg.FindCoordinatorResponse).Coordinators[0]; c.NodeID != 2 || c.Port != next.cfg.AdvertisedPort {
		t.Fatalf("coordinator %+v, want node 2", c)
	}
}

func TestFollowerWithoutPlacementIsRefused(t *testing.T) {
	_, err := New(Config{Addr: "127.0.0.1:0", Storage: newMemStore(), Authenticate: testAuthenticate, Follower: true})
	if err == nil {
		t.Fatal("a follower without a leader to send clients to was started")
	}
}

func TestFollowerAdminRESTServesTopicsAndSendsChangesToTheLeader(t *testing.T) {
	tc := startCluster(t)
	tc.mustCreate(t, "events", 1)
	srv := httptest.NewServer(tc.follower.AdminHandler(adminTestAuth))
	defer srv.Close()
	do := func(method, token, path, body string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	steps := []struct {
		method, token, path, body string
		status                    int
	}{
		{"GET", "reader", "/admin/topics/events", "", 200},
		{"GET", "reader", "/admin/topics", "", 200},
		{"POST", "reader", "/admin/topics", `{"name":"more"}`, 403}, // authorization first
		{"POST", "manager", "/admin/topics", `{"name":"more"}`, 503},
		{"PATCH", "manager", "/admin/topics/events", `{"configs":[{"name":"retention.ms","value":"1000"}]}`, 503},
		{"DELETE", "manager", "/admin/topics/events", "", 503},
		{"GET", "reader", "/admin/consumergroups", "", 503}, // groups live on the leader
		{"GET", "reader", "/admin/consumergroups/billing", "", 503},
		{"DELETE", "manager", "/admin/consumergroups/billing", "", 503},
	}
	for _, s := range steps {
		if status, body := do(s.method, s.token, s.path, s.body); status != s.status {
			t.Errorf("%s %s as %s: %d %s, want %d", s.method, s.path, s.token, status, body, s.status)
		}
	}
	tc.checkFollowerQuiet(t)
}

func TestLeaderWhosePlacementNamesAnotherNodeStopsServingAsLeader(t *testing.T) {
	tc := startCluster(t)
	tc.mustCreate(t, "orders", 1)
	listOffsets := func() int16 {
		rc := dialRaw(t, tc.leader)
		rc.login(managerKey)
		r := kmsg.NewPtrListOffsetsRequest()
		r.Version = 7
		r.Topics = []kmsg.ListOffsetsRequestTopic{{Topic: "orders", Partitions: []kmsg.ListOffsetsRequestTopicPartition{{Partition: 0, Timestamp: -1}}}}
		return rc.ask(r).(*kmsg.ListOffsetsResponse).Topics[0].Partitions[0].ErrorCode
	}
	if code := listOffsets(); code != 0 {
		t.Fatalf("the leader's ListOffsets: %v", kerr.ErrorForCode(code))
	}
	for _, leader := range []int32{2, -1} { // another node leads; none does (the lease lapsed)
		tc.placement.set(leader, tc.leader, tc.follower)
		if code := listOffsets(); code != kerr.NotLeaderForPartition.Code {
			t.Fatalf("leader %d: ListOffsets on node 1 answered %v, want NOT_LEADER_OR_FOLLOWER", leader, kerr.ErrorForCode(code))
		}
		if _, err := tc.leader.CreateTopic(t.Context(), "more", 1, nil); err == nil {
			t.Fatalf("leader %d: node 1 created a topic", leader)
		}
	}
}

func TestClientsCarryOnWhenAnotherNodeTakesTheLead(t *testing.T) {
	tc := startCluster(t)
	tc.mustCreate(t, "orders", 2)
	ctx := testCtx(t)
	seed := kgo.SeedBrokers(tc.follower.Addr().String())
	prod := tc.follower.client(t, writerKey, seed, kgo.DefaultProduceTopic("orders"), kgo.RetryTimeout(30*time.Second))
	produce := func(from, n int) {
		for i := from; i < from+n; i++ {
			if err := prod.ProduceSync(ctx, &kgo.Record{Value: []byte(fmt.Sprintf("order-%d", i))}).FirstErr(); err != nil {
				t.Fatalf("produce %d: %v", i, err)
			}
		}
	}
	consumeCommitted := func(n int) map[string]bool {
		cons := tc.follower.client(t, readerKey, seed, kgo.ConsumeTopics("orders"), kgo.ConsumerGroup("billing"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit(), kgo.RetryTimeout(30*time.Second))
		seen := map[string]bool{}
		for _, r := range consume(t, cons, n) {
			seen[string(r.Value)] = true
		}
		if err := cons.CommitUncommittedOffsets(ctx); err != nil {
			t.Fatal(err)
		}
		cons.LeaveGroup()
		return seen
	}
	produce(0, 10)
	if seen := consumeCommitted(10); len(seen) != 10 {
		t.Fatalf("consumed %d distinct records, want 10", len(seen))
	}

	// Node 1 goes; node 3 leads over the same storage; node 2 follows on.
	tc.leader.Close()
	next := startBroker(t, tc.leader.store, func(c *Config) { c.NodeID, c.Placement = 3, tc.placement })
	tc.placement.set(3, tc.follower, next)

	produce(10, 10) // the producer finds the new leader through the follower
	seen := consumeCommitted(10)
	for i := 10; i < 20; i++ {
		if !seen[fmt.Sprintf("order-%d", i)] {
			t.Fatalf("after the leader change the group consumed %v, want orders 10 to 19 (its commits kept)", seen)
		}
	}
	tc.checkFollowerQuiet(t)
}

// sharedProducerIDs is a cluster's one producer id sequence, as streams
// keeps it in the database.
type sharedProducerIDs struct {
	mu     sync.Mutex
	next   int64
	floors []int64
}

func (s *sharedProducerIDs) allocate(floor int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.floors = append(s.floors, floor)
	id := max(s.next, floor, 1)
	s.next = id + 1
	return id, nil
}

// librdkafka (kcat) asks the broker it is connected to for an idempotent
// producer id and never looks for a coordinator, so a follower must answer
// it, as every Kafka broker does: from the cluster's one sequence, never
// handing out an id twice, never one the storage's counter gave before.
func TestFollowerGivesIdempotentProducerIDsFromTheSharedSequence(t *testing.T) {
	ids := &sharedProducerIDs{}
	tc := startCluster(t, func(c *Config) { c.AllocateProducerID = ids.allocate })
	tc.mustCreate(t, "payments", 2)
	if _, err := kcat(t, tc.follower, writerKey, "a\nb\nc\n", "-P", "-t", "payments", "-X", "enable.idempotence=true"); err != nil {
		t.Fatal(err)
	}
	out, err := kcat(t, tc.follower, readerKey, "", "-C", "-t", "payments", "-o", "beginning", "-e", "-q")
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedLines(out); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("kcat consumed %q", got)
	}
	seen := map[int64]bool{}
	for _, b := range []testBroker{tc.follower, tc.leader, tc.follower} {
		rc := dialRaw(t, b)
		rc.login(writerKey)
		r := kmsg.NewPtrInitProducerIDRequest()
		r.Version, r.ProducerID, r.ProducerEpoch = 4, -1, -1
		resp := rc.ask(r).(*kmsg.InitProducerIDResponse)
		if resp.ErrorCode != 0 {
			t.Fatalf("InitProducerId: %v", kerr.ErrorForCode(resp.ErrorCode))
		}
		if seen[resp.ProducerID] {
			t.Fatalf("producer id %d handed out twice", resp.ProducerID)
		}
		seen[resp.ProducerID] = true
	}
	tc.checkFollowerQuiet(t)
}

// Client quotas are the leader's to change: a follower forwards an
// AlterClientQuotas to it (franz-go sends it to any broker, as Kafka's
// brokers forward it to the controller: KIP-590), and every node describes
// the leader's latest.
func TestFollowerForwardsClientQuotaChangesToTheLeader(t *testing.T) {
	tc := startCluster(t)
	rc := dialRaw(t, tc.follower)
	rc.login(managerKey)
	name := "iam-ServiceId-hog"
	alter := kmsg.NewPtrAlterClientQuotasRequest()
	alter.Version = 1
	alter.Entries = []kmsg.AlterClientQuotasRequestEntry{{
		Entity: []kmsg.AlterClientQuotasRequestEntryEntity{{Type: "user", Name: &name}},
		Ops:    []kmsg.AlterClientQuotasRequestEntryOp{{Key: "consumer_byte_rate", Value: 1 << 20}},
	}}
	if code := rc.ask(alter).(*kmsg.AlterClientQuotasResponse).Entries[0].ErrorCode; code != 0 {
		t.Fatalf("a follower answered AlterClientQuotas with %v", kerr.ErrorForCode(code))
	}
	// kadm, bootstrapped at the follower, sends it wherever it likes.
	res, err := tc.follower.admin(t, managerKey).AlterClientQuotas(testCtx(t), []kadm.AlterClientQuotaEntry{{
		Entity: user(name), Ops: []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: 2 << 20}}}})
	if err != nil || res[0].Err != nil {
		t.Fatalf("setting a quota through a client bootstrapped at the follower: %v %+v", err, res)
	}
	for _, b := range []testBroker{tc.leader, tc.follower} {
		rc := dialRaw(t, b)
		rc.login(managerKey)
		describe := kmsg.NewPtrDescribeClientQuotasRequest()
		describe.Version = 1
		resp := rc.ask(describe).(*kmsg.DescribeClientQuotasResponse)
		if resp.ErrorCode != 0 || len(resp.Entries) != 1 || len(resp.Entries[0].Values) != 2 {
			t.Fatalf("broker %d describes %+v (error %d), want both of the user's quotas", b.cfg.NodeID, resp.Entries, resp.ErrorCode)
		}
	}
	// A reader is refused by the leader, through the follower.
	rr := dialRaw(t, tc.follower)
	rr.login(readerKey)
	if code := rr.ask(alter).(*kmsg.AlterClientQuotasResponse).Entries[0].ErrorCode; code != kerr.ClusterAuthorizationFailed.Code {
		t.Fatalf("a reader's AlterClientQuotas through the follower: %v, want CLUSTER_AUTHORIZATION_FAILED", kerr.ErrorForCode(code))
	}
	tc.checkFollowerQuiet(t)
}
