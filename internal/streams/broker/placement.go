package broker

import (
	"strings"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/keyline/keyline/internal/errs"
)

// BrokerAddr is one node's Kafka address for this deployment.
type BrokerAddr struct {
	NodeID int32
	Host   string
	Port   int32
}

// Placement tells a broker which nodes serve its deployment and which one
// leads it.
type Placement interface {
	// Brokers lists the live nodes' addresses, this node's included, by
	// NodeID.
	Brokers() []BrokerAddr
	// Leader is the NodeID of the node that leads every partition,
	// coordinates groups and transactions and is the controller; -1 while
	// none is known (answered as LEADER_NOT_AVAILABLE /
	// COORDINATOR_NOT_AVAILABLE).
	Leader() int32
}

// noLeader is Placement.Leader's answer while no node leads.
const noLeader int32 = -1

// brokers lists the deployment's brokers as Metadata and DescribeCluster
// answer them: the placement's, or this broker alone.
func (b *Broker) brokers() []BrokerAddr {
	if b.cfg.Placement == nil {
		return []BrokerAddr{b.self()}
	}
	return b.cfg.Placement.Brokers()
}

// self is this broker's own address.
func (b *Broker) self() BrokerAddr {
	return BrokerAddr{NodeID: b.cfg.NodeID, Host: b.cfg.AdvertisedHost, Port: b.cfg.AdvertisedPort}
}

// leader is the node that leads every partition and coordinates every
// group and transaction, or noLeader.
func (b *Broker) leader() int32 {
	if b.cfg.Placement == nil {
		return b.cfg.NodeID
	}
	return b.cfg.Placement.Leader()
}

// leaderID is the leader as Metadata names it: noLeader while none leads
// or the leader is not among the brokers clients can reach.
func (b *Broker) leaderID() int32 {
	if a, ok := b.leaderAddr(); ok {
		return a.NodeID
	}
	return noLeader
}

// leaderAddr is the leading node's address, false while none leads or the
// leader is not among the live brokers.
func (b *Broker) leaderAddr() (BrokerAddr, bool) {
	id := b.leader()
	if id == noLeader {
		return BrokerAddr{}, false
	}
	if id == b.cfg.NodeID && !b.cfg.Follower {
		return b.self(), true
	}
	for _, a := range b.brokers() {
		if a.NodeID == id {
			return a, true
		}
	}
	return BrokerAddr{}, false
}

// follows reports whether another node leads the deployment: this broker
// is a follower, or its placement names another leader (or none), as it
// does the moment a leader loses its lease.
func (b *Broker) follows() bool {
	return b.cfg.Follower || b.leader() != b.cfg.NodeID
}

// leaderPartition finds a partition that this broker leads, or the Kafka
// error saying why not: a follower knows the partition but sends its
// client to the leader with NOT_LEADER_OR_FOLLOWER, as a Kafka broker that
// is not the partition's leader does.
func (b *Broker) leaderPartition(t *topic, index int32) (*partition, *kerr.Error) {
	p, kerrr := b.topics.partition(t, index)
	if kerrr == nil && b.follows() {
		return nil, kerr.NotLeaderForPartition // code 6, NOT_LEADER_OR_FOLLOWER since Kafka 2.6
	}
	return p, kerrr
}

// notCoordinator is NOT_COORDINATOR on a follower: the leader coordinates
// every group and transaction, and a client that asks a follower looks
// the coordinator up again (FindCoordinator answers the leader).
func (b *Broker) notCoordinator() *kerr.Error {
	if b.follows() {
		return kerr.NotCoordinator
	}
	return nil
}

// notController is NOT_CONTROLLER on a follower: topics and their configs
// are changed by the leader, which Metadata names as the controller.
func (b *Broker) notController() *kerr.Error {
	if b.follows() {
		return kerr.NotController
	}
	return nil
}

// CodeNotLeader is the reason code of a change asked of a follower through
// the Go or admin REST API: the deployment's leader makes every change.
const CodeNotLeader = "NOT_LEADER"

// leaderOnly refuses a change on a follower.
func (b *Broker) leaderOnly(op string) error {
	if b.follows() {
		return errs.E(op, errs.Unavailable, CodeNotLeader, "this node does not lead the deployment; its leader makes changes")
	}
	return nil
}

// FollowerReads reports whether a follower reads the storage metadata key:
// topics' records (ReloadTopics), client quotas (DescribeClientQuotas)
// and, with Config.AllocateProducerID, the
// storage's producer id counter, as the floor of the shared sequence (it no
// longer moves once the sequence allocates). A store that tells other nodes
// of metadata changes need not tell them of the rest (groups' offsets,
// transactions), which change far more often.
func FollowerReads(key string) bool {
	return strings.HasPrefix(key, topicMetaPrefix) || key == producerIDKey || key == quotasKey
}
