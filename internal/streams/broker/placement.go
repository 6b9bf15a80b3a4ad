package broker

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
