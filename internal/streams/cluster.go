package streams

import (
	"context"
	"hash/fnv"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/broker"
	"github.com/keyline/keyline/internal/streams/objlog"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// A cluster of nodes on one PostgreSQL database (Config.Members) serves
// every deployment on every node, with one leader per deployment: the node
// holding the lease deployment/<guid>. With the data on object storage the
// leader opens the log writable and runs the full broker; every other node
// listens too and runs a follower broker over a read-only view of the
// deployment's metadata, which sends clients to the leader. With the data on
// local disks only the leader serves (others refuse logins, saying where).

// DeploymentTopic is the change feed topic of a deployment's row (key: its
// GUID): created, suspended, restored, locked or unlocked, re-keyed, erased.
const DeploymentTopic = "streams.deployment"

// Deployment lease timings: a killed leader is replaced within
// deploymentLeaseTTL plus, for a node the deployment does not hash to,
// another deploymentLeaseTTL, and clients resume well within 10 s.
const (
	deploymentLeaseRenew = time.Second
	deploymentLeaseTTL   = 3 * time.Second
	// never is the lease deferral of a node that must not take a lease.
	never = 100 * 365 * 24 * time.Hour
	// causeElsewhere locks a local-disk deployment on the nodes that do
	// not hold its data.
	causeElsewhere = "elsewhere"
	// forwardedHeader marks an admin REST call a follower forwarded to the
	// leader, so that it is never forwarded twice.
	forwardedHeader = "X-Keyline-Forwarded-By"
	// forwardTimeout bounds a forwarded admin REST call.
	forwardTimeout = 30 * time.Second
)

// kmsKeysTopic is the KMS's change feed topic of keys and their states.
const kmsKeysTopic = "kms.keys"

func deploymentLease(guid string) string { return "deployment/" + guid }

var clusterMigration = store.Migration{ID: "streams/cluster", SQL: `
CREATE TABLE streams_brokers (
	node_id   TEXT PRIMARY KEY,
	broker_id INTEGER NOT NULL UNIQUE
);
CREATE TABLE streams_endpoints (
	guid      TEXT NOT NULL,
	node_id   TEXT NOT NULL,
	broker_id INTEGER NOT NULL,
	host      TEXT NOT NULL,
	port      INTEGER NOT NULL,
	PRIMARY KEY (guid, node_id)
);
CREATE TABLE streams_locks (
	guid   TEXT PRIMARY KEY,
	cause  TEXT NOT NULL,
	reason TEXT NOT NULL
);
CREATE TABLE streams_producer_ids (
	guid    TEXT PRIMARY KEY,
	next_id INTEGER NOT NULL
);
CREATE TABLE streams_event_acts (
	event_id TEXT NOT NULL,
	guid     TEXT NOT NULL,
	PRIMARY KEY (event_id, guid)
);`}

// clusterState is this node's part in serving deployments with others.
type clusterState struct {
	db       *store.DB
	members  *cluster.Membership
	brokerID int32
	objects  bool // the data is on object storage: followers serve too
	proxy    *http.Transport

	mu       sync.Mutex
	live     []cluster.Node
	liveAt   time.Time
	brokers  map[string]cachedBrokers
	leaders  map[string]cachedLeader
	dirty    map[string]bool // GUIDs to re-read
	metas    map[string]bool // GUIDs whose metadata changed
	resync   bool            // re-read every deployment
	wake     chan struct{}
	stopSync context.CancelFunc
	synced   sync.WaitGroup
}

type cachedBrokers struct {
	at    time.Time
	addrs []broker.BrokerAddr
}

type cachedLeader struct {
	at time.Time
	id int32
}

// Cache lifetimes of the placement's answers.
const (
	brokersFor = time.Second
	leaderFor  = 500 * time.Millisecond
)

// joinCluster allocates this node's broker id (once per node id, under the
// writers' lock) and follows the deployments' changes through the feed.
func (s *Service) joinCluster(ctx context.Context) error {
	const op = "streams.joinCluster"
	m := s.cfg.Members
	var id int64
	if err := s.db.Tx(ctx, func(tx *store.Tx) error {
		err := tx.QueryRow(`SELECT broker_id FROM streams_brokers WHERE node_id = ?`, m.ID()).Scan(&id)
		if !store.IsNoRows(err) {
			return err
		}
		if err := tx.QueryRow(`SELECT COALESCE(MAX(broker_id), -1) + 1 FROM streams_brokers`).Scan(&id); err != nil {
			return err
		}
		_, err = tx.Exec(`INSERT INTO streams_brokers (node_id, broker_id) VALUES (?, ?)`, m.ID(), id)
		return err
	}); err != nil {
		return errs.Internalf(op, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = forwardTimeout
	s.cl = &clusterState{db: s.db, members: m, brokerID: int32(id), objects: s.cfg.ObjectStore != nil, proxy: tr,
		brokers: map[string]cachedBrokers{}, leaders: map[string]cachedLeader{},
		dirty: map[string]bool{}, metas: map[string]bool{}, wake: make(chan struct{}, 1)}
	if f := s.cfg.Feed; f != nil {
		f.Subscribe(DeploymentTopic, func(guid string) { s.cl.mark(guid, false) })
		f.SubscribePrefix("objlog.", func(topic, _ string) { s.cl.mark(strings.TrimPrefix(topic, "objlog."), true) })
		// A key changed through another node may have raised events for
		// deployments this node leads: the event loop looks at once
		// rather than at its next poll.
		f.Subscribe(kmsKeysTopic, func(string) {
			select {
			case s.events <- struct{}{}:
			default:
			}
		})
		f.OnReset(func() {
			s.cl.mu.Lock()
			s.cl.resync = true
			s.cl.mu.Unlock()
			s.cl.poke()
		})
	}
	return nil
}

func (c *clusterState) mark(guid string, meta bool) {
	c.mu.Lock()
	if meta {
		c.metas[guid] = true
	} else {
		c.dirty[guid] = true
	}
	c.mu.Unlock()
	c.poke()
}

func (c *clusterState) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// runSync applies the changes other nodes made to deployments, as the
// feed reports them, until ctx ends.
func (s *Service) runSync(ctx context.Context) {
	c := s.cl
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.wake:
		}
		c.mu.Lock()
		dirty, metas, resync := c.dirty, c.metas, c.resync
		c.dirty, c.metas, c.resync = map[string]bool{}, map[string]bool{}, false
		c.mu.Unlock()
		if resync {
			s.mu.Lock()
			for g := range s.deployments {
				dirty[g] = true
			}
			s.mu.Unlock()
			var recs []*record
			if err := s.db.Read(ctx, func(tx *store.Tx) error {
				var err error
				recs, err = listRecords(tx)
				return err
			}); err == nil {
				for _, r := range recs {
					dirty[r.GUID] = true
				}
			}
		}
		for g := range dirty {
			s.syncDeployment(ctx, g)
		}
		for g := range metas {
			if !dirty[g] {
				s.refreshView(ctx, g)
			}
		}
	}
}

// refreshView re-reads a follower's view of the deployment's metadata and
// has its broker reload the topics.
func (s *Service) refreshView(ctx context.Context, guid string) {
	d := s.find(guid)
	if d == nil {
		return
	}
	d.mu.Lock()
	view, brk := d.view, d.brk
	d.mu.Unlock()
	if view == nil || brk == nil {
		return
	}
	if err := view.Refresh(ctx); err != nil {
		s.log.Warn("streams: cannot refresh the deployment's metadata", "deployment", guid, "err", err)
		return
	}
	if err := brk.ReloadTopics(); err != nil {
		s.log.Warn("streams: cannot reload the deployment's topics", "deployment", guid, "err", err)
	}
}

// find is the deployment guid, nil if there is none.
func (s *Service) find(guid string) *deployment {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.deployments[guid]
}

// syncDeployment brings this node's copy of a deployment in line with its
// row: starts a new one, stops a suspended or erased one, restarts a
// restored one, and follows the lock its leader decided.
func (s *Service) syncDeployment(ctx context.Context, guid string) {
	var rec *record
	var lk storedLock
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		if rec, err = getRecord(tx, guid); err != nil {
			return err
		}
		lk, err = readLock(tx, guid)
		return err
	})
	if err != nil && !store.IsNoRows(err) {
		s.log.Warn("streams: cannot read a changed deployment", "deployment", guid, "err", err)
		return
	}
	s.mu.Lock()
	d, closed := s.deployments[guid], s.closed
	if closed {
		s.mu.Unlock()
		return
	}
	if rec == nil {
		delete(s.deployments, guid)
		s.mu.Unlock()
		if d != nil {
			// Erased on another node.
			s.stopLease(d)
			d.op.Lock()
			s.stop(d)
			if err := removeData(d.dir); err != nil {
				s.log.Warn("streams: cannot remove an erased deployment's data", "deployment", guid, "err", err)
			}
			d.op.Unlock()
		}
		return
	}
	if d == nil {
		d = s.newDeployment(rec)
		s.deployments[guid] = d
		s.mu.Unlock()
		s.startDeployment(ctx, d)
		return
	}
	s.mu.Unlock()
	d.op.Lock()
	defer d.op.Unlock()
	d.mu.Lock()
	port := d.rec.Port
	d.rec = rec
	d.rec.Port = port
	front, lock, cause, dek := d.front, d.lock, d.lockCause, d.dek
	leading := d.leader
	d.mu.Unlock()
	switch {
	case rec.Suspended:
		if front != nil {
			s.stop(d)
			d.mu.Lock()
			d.lock, d.lockCause = "", ""
			d.mu.Unlock()
		}
	case front == nil:
		if err := s.listen(ctx, d); err != nil {
			s.log.Error("streams: deployment has no Kafka listener", "deployment", guid, "err", err)
			return
		}
		s.bringUp(ctx, d)
	case leading:
		// The leader decides its deployment's state itself.
	case lk.cause != "":
		if lock != lk.reason {
			s.lockData(d, lk.cause, lk.reason)
		}
	case lock != "" && cause != causeElsewhere, dek != nil && dek.ID != rec.DEKID:
		// Unlocked by its leader, or under a new DEK.
		s.bringUp(ctx, d)
	}
}

// startDeployment listens for a deployment, serves it as its leader if it
// takes its lease now, else as a follower, and keeps trying for the lease.
func (s *Service) startDeployment(ctx context.Context, d *deployment) {
	rec, _, _ := d.snapshot()
	if !rec.Suspended {
		if err := s.listen(ctx, d); err != nil {
			s.log.Error("streams: deployment has no Kafka listener", "deployment", rec.GUID, "err", err)
		}
	}
	d.op.Lock()
	if s.cl != nil {
		s.tryLead(ctx, d)
	}
	if !rec.Suspended {
		s.bringUp(ctx, d)
	}
	d.op.Unlock()
	s.runLease(d)
}

// newLease makes the deployment's lease (nil outside a cluster).
func (s *Service) newLease(d *deployment) *cluster.Lease {
	if s.cl == nil {
		return nil
	}
	return s.cl.members.LeaseWith(deploymentLease(d.guid), cluster.LeaseOptions{Renew: deploymentLeaseRenew, TTL: deploymentLeaseTTL,
		Defer: func(last string) time.Duration { return s.leaseDefer(d, last) }})
}

// tryLead takes the deployment's lease now if it is free. The caller holds
// d.op.
func (s *Service) tryLead(ctx context.Context, d *deployment) bool {
	held, err := d.lease.TryAcquire(ctx)
	if err != nil {
		s.log.Warn("streams: cannot take a deployment's lease", "deployment", d.guid, "err", err)
	}
	d.mu.Lock()
	d.leader = held
	d.mu.Unlock()
	s.cl.forgetLeader(d.guid)
	return held
}

// leaseDefer spreads the leaders: with the data on object storage a node
// takes at once a lapsed lease of a deployment that hashes to it among the
// live nodes other than the last holder (or that it held last, when no
// other node is live), and others' only once it has lapsed for another
// TTL; with the data on local disks only the node that holds it may lead.
func (s *Service) leaseDefer(d *deployment, last string) time.Duration {
	if !s.cl.objects {
		if des, _ := os.ReadDir(d.dir); len(des) > 0 {
			return 0
		}
		return never
	}
	var best string
	var top uint64
	for _, n := range s.cl.liveNodes() {
		if n.ID == last {
			continue
		}
		h := fnv.New64a()
		h.Write([]byte(d.guid + "/" + n.ID))
		if v := h.Sum64(); best == "" || v > top {
			best, top = n.ID, v
		}
	}
	if best == s.cl.members.ID() || (best == "" && last == s.cl.members.ID()) {
		return 0
	}
	return deploymentLeaseTTL
}

// runLease keeps trying for the deployment's lease until it is erased or
// the service closes: this node leads the deployment while it holds it.
func (s *Service) runLease(d *deployment) {
	if s.cl == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	d.mu.Lock()
	d.stopLeaseFn, d.leaseDone = cancel, done
	d.mu.Unlock()
	go func() {
		defer close(done)
		d.lease.Run(ctx, func(wctx context.Context) error {
			s.promote(wctx, d)
			<-wctx.Done()
			s.demote(d)
			return nil
		})
	}()
}

// stopLease stops trying for the lease and releases it.
func (s *Service) stopLease(d *deployment) {
	d.mu.Lock()
	stop, done := d.stopLeaseFn, d.leaseDone
	d.stopLeaseFn = nil
	d.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// promote makes this node the deployment's leader: a follower's view and
// broker give way to the writable log and the full broker on the same
// socket. A deployment locked by its key stays locked.
func (s *Service) promote(ctx context.Context, d *deployment) {
	d.op.Lock()
	defer d.op.Unlock()
	d.mu.Lock()
	was := d.leader
	d.leader = true
	front, suspended, lock, cause, view := d.front, d.rec.Suspended, d.lock, d.lockCause, d.view
	d.mu.Unlock()
	s.cl.forgetLeader(d.guid)
	if !was {
		s.log.Info("streams: leading a deployment", "deployment", d.guid)
	}
	if front == nil || suspended || s.isClosed() {
		return
	}
	if view != nil || (lock != "" && cause != causeDisabled && cause != causeDeleted && cause != causePurged) {
		s.bringUp(ctx, d)
	}
}

// demote makes this node a follower of the deployment once it lost the
// lease: the writable log closes at once (another node may be writing), then
// the deployment is served over a view again.
func (s *Service) demote(d *deployment) {
	d.op.Lock()
	defer d.op.Unlock()
	d.mu.Lock()
	d.leader = false
	writing := d.st != nil || d.obj != nil
	d.mu.Unlock()
	s.cl.forgetLeader(d.guid)
	if !writing || s.isClosed() {
		return
	}
	s.log.Warn("streams: no longer leading a deployment", "deployment", d.guid)
	s.closeData(d, false)
	s.bringUp(context.Background(), d)
}

func (s *Service) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// leading says whether this node leads the deployment: always outside a
// cluster.
func (s *Service) leading(d *deployment) bool {
	if s.cl == nil {
		return true
	}
	d.mu.Lock()
	leader := d.leader
	d.mu.Unlock()
	return leader && d.lease.Held()
}

// following says whether this node serves the deployment as a follower
// over a view of its metadata.
func (s *Service) following(d *deployment) bool {
	return s.cl != nil && s.cl.objects && !s.leading(d)
}

// elsewhere is why a node that does not lead a deployment on local disk
// does not serve it ("" when it may).
func (s *Service) elsewhere(d *deployment) string {
	if s.cl == nil || s.cl.objects || s.leading(d) {
		return ""
	}
	return "the deployment's data is on another node's local disk: connect to the address in its credentials"
}

// openData opens the deployment's log: writable on its leader, as a
// read-only view of the metadata on a follower.
// Exactly one of the stores returned is set.
func (s *Service) openData(d *deployment, keys []*seglog.DEK) (*seglog.Store, *objlog.Store, *objlog.View, broker.Storage, error) {
	if !s.following(d) {
		st, obj, storage, err := s.openLog(d, keys)
		if err == nil && s.cl != nil && obj != nil {
			storage = leaderStorage{Storage: storage, s: s, d: d}
		}
		return st, obj, nil, storage, err
	}
	opts := s.cfg.ObjectLog
	opts.StoreID, opts.Keys = d.guid, keys
	v, err := objlog.OpenView(context.Background(), s.db, opts)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	return nil, nil, v, broker.StorageOf(v), nil
}

// leaderStorage is the leader's storage of a deployment on object
// storage: its metadata writes (topics, groups' offsets, producer state)
// stop as soon as this node no longer counts on the lease, so that a
// leader paused past its lease does not write over its successor's
// (its log appends are fenced by their end offsets).
type leaderStorage struct {
	broker.Storage
	s *Service
	d *deployment
}

func (l leaderStorage) check(op string) error {
	if l.s.leading(l.d) {
		return nil
	}
	return errs.E(op, errs.Conflict, "LEASE_LOST", "this node no longer leads the deployment")
}

func (l leaderStorage) PutMeta(key string, value []byte) error {
	if err := l.check("streams.PutMeta"); err != nil {
		return err
	}
	return l.Storage.PutMeta(key, value)
}

func (l leaderStorage) DeleteMeta(key string) error {
	if err := l.check("streams.DeleteMeta"); err != nil {
		return err
	}
	return l.Storage.DeleteMeta(key)
}

func (l leaderStorage) DropPartition(name string) error {
	if err := l.check("streams.DropPartition"); err != nil {
		return err
	}
	return l.Storage.DropPartition(name)
}

// placement is a deployment's Placement for its broker.
type placement struct {
	s *Service
	d *deployment
}

func (p placement) Brokers() []broker.BrokerAddr { return p.s.cl.brokersOf(p.d.guid) }

func (p placement) Leader() int32 {
	if p.s.leading(p.d) {
		return p.s.cl.brokerID
	}
	return p.s.cl.leaderOf(p.d.guid)
}

// placementOf is the deployment's Placement, nil outside an object-store
// cluster.
func (s *Service) placementOf(d *deployment) broker.Placement {
	if s.cl == nil || !s.cl.objects {
		return nil
	}
	return placement{s, d}
}

// liveNodes lists the live nodes, read at most once a second.
func (c *clusterState) liveNodes() []cluster.Node {
	c.mu.Lock()
	fresh := time.Since(c.liveAt) < brokersFor
	live := c.live
	c.mu.Unlock()
	if fresh {
		return live
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nodes, err := c.members.Live(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err == nil {
		c.live = nodes
	}
	c.liveAt = time.Now()
	return c.live
}

// brokersOf lists the Kafka addresses of the live nodes for a deployment,
// by broker id.
func (c *clusterState) brokersOf(guid string) []broker.BrokerAddr {
	c.mu.Lock()
	cb, ok := c.brokers[guid]
	c.mu.Unlock()
	if ok && time.Since(cb.at) < brokersFor {
		return cb.addrs
	}
	live := map[string]bool{c.members.ID(): true}
	for _, n := range c.liveNodes() {
		live[n.ID] = true
	}
	var addrs []broker.BrokerAddr
	err := c.db.Read(context.Background(), func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT node_id, broker_id, host, port FROM streams_endpoints WHERE guid = ? ORDER BY broker_id`, guid)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var node string
			var a broker.BrokerAddr
			if err := rows.Scan(&node, &a.NodeID, &a.Host, &a.Port); err != nil {
				return err
			}
			if live[node] {
				addrs = append(addrs, a)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return cb.addrs
	}
	c.mu.Lock()
	c.brokers[guid] = cachedBrokers{at: time.Now(), addrs: addrs}
	c.mu.Unlock()
	return addrs
}

// leaderOf is the broker id of the node holding the deployment's lease, -1
// while it has lapsed.
func (c *clusterState) leaderOf(guid string) int32 {
	c.mu.Lock()
	cl, ok := c.leaders[guid]
	c.mu.Unlock()
	if ok && time.Since(cl.at) < leaderFor {
		return cl.id
	}
	id := int32(-1)
	err := c.db.Read(context.Background(), func(tx *store.Tx) error {
		err := tx.QueryRow(`SELECT b.broker_id FROM cluster_leases l JOIN streams_brokers b ON b.node_id = l.node_id
			WHERE l.name = ? AND l.expires_at > ?`, deploymentLease(guid), store.Time(time.Now())).Scan(&id)
		if store.IsNoRows(err) {
			return nil
		}
		return err
	})
	if err != nil {
		return -1
	}
	c.mu.Lock()
	c.leaders[guid] = cachedLeader{at: time.Now(), id: id}
	c.mu.Unlock()
	return id
}

func (c *clusterState) forgetLeader(guid string) {
	c.mu.Lock()
	delete(c.leaders, guid)
	c.mu.Unlock()
}

// leaderURL is the URL of the node leading the deployment ("" if none).
func (c *clusterState) leaderURL(ctx context.Context, guid string) (string, error) {
	holder, err := c.members.Holder(ctx, deploymentLease(guid))
	if err != nil || holder == "" || holder == c.members.ID() {
		return "", err
	}
	for _, n := range c.liveNodes() {
		if n.ID == holder {
			return n.URL, nil
		}
	}
	return "", nil
}

// producerIDs is the deployment's producer id allocator when every node
// serves it (the data on object storage): one sequence in the database, so
// that leader and followers alike answer an idempotent InitProducerId and
// never hand out an id twice. nil otherwise: the broker's counter in its
// storage.
func (s *Service) producerIDs(guid string) func(floor int64) (int64, error) {
	if s.cl == nil || !s.cl.objects {
		return nil
	}
	return func(floor int64) (int64, error) {
		var id int64
		err := s.db.Tx(context.Background(), func(tx *store.Tx) error {
			var next int64
			if err := tx.QueryRow(`SELECT next_id FROM streams_producer_ids WHERE guid = ?`, guid).Scan(&next); err != nil && !store.IsNoRows(err) {
				return err
			}
			id = max(next, floor, 1)
			_, err := tx.Exec(`INSERT INTO streams_producer_ids (guid, next_id) VALUES (?, ?)
				ON CONFLICT (guid) DO UPDATE SET next_id = excluded.next_id`, guid, id+1)
			return err
		})
		if err != nil {
			return 0, errs.Internalf("streams.producerID", err)
		}
		return id, nil
	}
}

// saveEndpoint records this node's Kafka address for the deployment.
func (s *Service) saveEndpoint(ctx context.Context, guid string, port int) error {
	if err := s.db.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`INSERT INTO streams_endpoints (guid, node_id, broker_id, host, port) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (guid, node_id) DO UPDATE SET broker_id = excluded.broker_id, host = excluded.host, port = excluded.port`,
			guid, s.cl.members.ID(), s.cl.brokerID, s.cfg.AdvertisedHost, port)
		return err
	}); err != nil {
		return err
	}
	// A look taken before (the deployment's status while it was being
	// provisioned) would hide this address from credentials for a second.
	s.cl.forgetBrokers(guid)
	return nil
}

// forgetBrokers drops the cached addresses of guid.
func (c *clusterState) forgetBrokers(guid string) {
	c.mu.Lock()
	delete(c.brokers, guid)
	c.mu.Unlock()
}

// endpointPort is the port this node last listened on for the deployment
// (0 for none).
func (s *Service) endpointPort(ctx context.Context, guid string) int {
	var port int
	s.db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT port FROM streams_endpoints WHERE guid = ? AND node_id = ?`, guid, s.cl.members.ID()).Scan(&port)
	})
	return port
}

// clusterAddrs are a deployment's Kafka addresses in a cluster: every live
// node's with the data on object storage, its leader's with the data on a
// local disk.
func (s *Service) clusterAddrs(guid string) []string {
	addrs := s.cl.brokersOf(guid)
	if !s.cl.objects {
		leader := s.cl.leaderOf(guid)
		addrs = slices.DeleteFunc(slices.Clone(addrs), func(a broker.BrokerAddr) bool { return a.NodeID != leader })
	}
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port))))
	}
	return out
}

// storedLock is the lock a deployment's leader decided from a key event
// (disabled, deleted), which every node applies.
type storedLock struct{ cause, reason string }

func readLock(tx *store.Tx, guid string) (storedLock, error) {
	var l storedLock
	err := tx.QueryRow(`SELECT cause, reason FROM streams_locks WHERE guid = ?`, guid).Scan(&l.cause, &l.reason)
	if store.IsNoRows(err) {
		return storedLock{}, nil
	}
	return l, err
}

// storeLock records (or, with an empty cause, clears) the lock the leader
// decided, for the other nodes to apply.
func (s *Service) storeLock(ctx context.Context, guid, cause, reason string) error {
	if s.cl == nil {
		return nil
	}
	return s.db.Tx(ctx, func(tx *store.Tx) error {
		var err error
		if cause == "" {
			_, err = tx.Exec(`DELETE FROM streams_locks WHERE guid = ?`, guid)
		} else {
			_, err = tx.Exec(`INSERT INTO streams_locks (guid, cause, reason) VALUES (?, ?, ?)
				ON CONFLICT (guid) DO UPDATE SET cause = excluded.cause, reason = excluded.reason`, guid, cause, reason)
		}
		tx.Changed(DeploymentTopic, guid)
		return err
	})
}

// followerLock is the lock the deployment's leader decided, which a
// follower applies rather than ask the KMS itself.
func (s *Service) followerLock(ctx context.Context, guid string) storedLock {
	var l storedLock
	if err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		l, err = readLock(tx, guid)
		return err
	}); err != nil {
		s.log.Warn("streams: cannot read a deployment's lock", "deployment", guid, "err", err)
	}
	return l
}

// eraseClusterRows removes a reclaimed deployment's endpoints, lock and producer id sequence.
func eraseClusterRows(tx *store.Tx, guid string) error {
	for _, q := range []string{`DELETE FROM streams_endpoints WHERE guid = ?`, `DELETE FROM streams_locks WHERE guid = ?`, `DELETE FROM streams_producer_ids WHERE guid = ?`} {
		if _, err := tx.Exec(q, guid); err != nil {
			return err
		}
	}
	tx.Changed(DeploymentTopic, guid)
	return nil
}

// eventTurn says whether this node handles ev now: in a cluster each
// deployment's leader applies the event to it, and the last of them
// acknowledges it. mine lists the deployments this node leads.
func (s *Service) eventTurn(ev KeyEvent) (mine map[string]bool, others []string, handle bool) {
	mine = map[string]bool{}
	for _, rc := range ev.ResourceCRNs {
		d := s.deploymentByCRN(rc)
		switch {
		case d == nil:
		case s.cl == nil || s.leading(d):
			mine[rc] = true
		default:
			others = append(others, d.guid)
		}
	}
	return mine, others, len(mine) > 0
}

// eventActed says whether deployment guid already acted on event id.
func (s *Service) eventActed(ctx context.Context, id, guid string) bool {
	n := 0
	s.db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT COUNT(*) FROM streams_event_acts WHERE event_id = ? AND guid = ?`, id, guid).Scan(&n)
	})
	return n > 0
}

// recordActed records that guid acted on event id, for the leaders of the
// event's other deployments.
func (s *Service) recordActed(ctx context.Context, id, guid string) error {
	return s.db.Tx(ctx, func(tx *store.Tx) error {
		_, err := tx.Exec(`INSERT INTO streams_event_acts (event_id, guid) VALUES (?, ?) ON CONFLICT DO NOTHING`, id, guid)
		return err
	})
}

// forwardAdmin sends an admin REST call to the deployment's leader, with
// its credentials, and relays the answer.
func (s *Service) forwardAdmin(w http.ResponseWriter, r *http.Request, guid string) {
	const op = "streams.admin"
	noLeader := errs.E(op, errs.Unavailable, "NO_LEADER", "no node leads the deployment now (its leader stopped; another takes over within seconds): try again")
	if r.Header.Get(forwardedHeader) != "" {
		writeError(w, noLeader)
		return
	}
	leader, err := s.cl.leaderURL(r.Context(), guid)
	if err != nil || leader == "" {
		writeError(w, noLeader)
		return
	}
	target, err := url.Parse(leader)
	if err != nil {
		writeError(w, errs.Internalf(op, err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), forwardTimeout)
	defer cancel()
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Header.Set(forwardedHeader, s.cl.members.ID())
		},
		Transport: s.cl.proxy,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			s.log.Warn("streams: cannot forward an admin call to the deployment's leader", "deployment", guid, "leader", leader, "err", err)
			writeError(w, errs.E(op, errs.Unavailable, "LEADER_UNREACHABLE", "the node leading the deployment cannot be reached now: try again"))
		},
	}
	rp.ServeHTTP(w, r.WithContext(ctx))
}
