package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/connhold"
	"github.com/keyline/keyline/internal/errs"
)

// Access is what an authenticated principal may do. Each level includes the
// ones below it.
type Access int

const (
	NoAccess Access = iota
	Reader          // consume, describe, consumer groups
	Writer          // also produce and init producer id
	Manager         // also create/delete topics and partitions, delete records
)

func (a Access) String() string {
	switch a {
	case Reader:
		return "reader"
	case Writer:
		return "writer"
	case Manager:
		return "manager"
	}
	return "none"
}

// Allows reports whether a grants at least need.
func (a Access) Allows(need Access) bool { return need == NoAccess || a >= need }

// Authenticator checks a SASL PLAIN login. Its error's message is sent to the
// client, so it must say what is wrong without echoing the password.
type Authenticator func(ctx context.Context, user, password string) (Access, error)

// Clock tells the time; internal/clock's clocks satisfy it.
type Clock interface{ Now() time.Time }

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }

// Config configures a Broker.
type Config struct {
	NodeID         int32
	Listener       net.Listener // if nil, Addr is listened on
	Addr           string
	AdvertisedHost string // defaults to the listener's host
	AdvertisedPort int32  // defaults to the listener's port
	ClusterID      string
	TLS            *tls.Config // when set, clients speak SASL_SSL
	Storage        Storage
	Authenticate   Authenticator
	Logger         *slog.Logger
	Clock          Clock
	// Audit, when set, records topic and group changes (audit.go).
	Audit ChangeRecorder

	// Login, when set, checks logins instead of Authenticate: PLAIN and
	// OAUTHBEARER, with grants scoped to topics, groups and transactional
	// ids (acl.go).
	Login LoginChecker

	// Placement, when set, lists the nodes serving the deployment and
	// names its leader (placement.go); nil: this broker alone, NodeID
	// leading everything.
	Placement Placement
	// Follower serves the deployment as a follower: Storage is read-only
	// (a view of the leader's), requests that need the leader are answered
	// with Kafka's retriable errors that send clients to it, and no
	// background work (retention, compaction, transaction timeouts) runs.
	Follower bool
	// AllocateProducerID, when set, hands out producer ids instead of the
	// counter in Storage: in a cluster every node allocates from one
	// sequence in the database, so that a follower answers an idempotent
	// InitProducerId as every Kafka broker does (librdkafka asks the broker
	// it is connected to and does not look for a coordinator). floor is
	// Storage's own counter: ids handed out before are below it.
	AllocateProducerID func(floor int64) (int64, error)

	// AutoCreateTopics lets Metadata and Produce create unknown topics with
	// one partition. Off by default, as on Event Streams.
	AutoCreateTopics bool
	// IdleTimeout closes a connection that sends nothing (default 10 min).
	IdleTimeout time.Duration
	// MaxRequestBytes caps a request frame (default 100 MiB, or
	// RequestMemory when that is less); it may not exceed RequestMemory.
	MaxRequestBytes int32
	// RetentionInterval is how often retention runs (default 1 min).
	RetentionInterval time.Duration
	// CompactionInterval is how often the log cleaner looks for compacted
	// topics' partitions to clean (default 15 s, as Kafka's backoff).
	CompactionInterval time.Duration
	// MaxPartitions caps partitions per topic (default 1000).
	MaxPartitions int32
	// Limits are the deployment's plan's: total partitions, the highest
	// max.message.bytes (at most MaxRequestBytes) and retention caps.
	Limits PlanLimits
	// MaxConnections caps open connections; more are closed at once
	// (default 1024).
	MaxConnections int
	// MaxPreAuthConnections caps the connections that have not logged in
	// yet (default 256), and MaxPreAuthPerIP those from one source address
	// (default 32): strangers cannot take the slots of clients that logged
	// in, nor one host those of every other.
	MaxPreAuthConnections int
	MaxPreAuthPerIP       int
	// ConnectionRatePerIP is how many connections a second one source
	// address may open, in bursts of ConnectionBurstPerIP (defaults
	// DefaultConnectionRatePerIP and DefaultConnectionBurstPerIP). A
	// connection over it, or over a cap above, is held by Holder (default
	// connhold.Process()), unread, before it is closed.
	ConnectionRatePerIP  float64
	ConnectionBurstPerIP int
	Holder               *connhold.Holder
	// LoginTimeout is how long a new connection may take to log in
	// (default 10 s).
	LoginTimeout time.Duration
	// Reauthorize is how often every connection's login is checked again
	// with Authenticate (default 5 s): deleted credentials, a removed
	// policy or a lowered role reach live connections within it.
	Reauthorize time.Duration

	// FetchMemory bounds what the broker's fetch responses hold at once,
	// from their read until they are written (default 256 MiB); a fetch
	// holds about twice the data it returns, read and then encoded. When it
	// is spent a fetch is answered with less data, or waits for it up to
	// its MaxWaitMillis and is answered without; a batch larger than all of
	// it is still served, alone. SharedFetchMemory, when set, is the
	// process's budget, which fetches take from too.
	FetchMemory       int64
	SharedFetchMemory *MemoryBudget
	// RequestMemory bounds the request frames over 64 KiB (produce
	// requests, mostly) being read and handled at once (default 256 MiB):
	// a frame waits until its size is free. A frame larger than it, or than
	// SharedRequestMemory (the process's budget, when set), closes the
	// connection.
	RequestMemory       int64
	SharedRequestMemory *MemoryBudget
}

// Default memory budgets of one broker.
const (
	DefaultFetchMemory   = 256 << 20
	DefaultRequestMemory = 256 << 20
)

// preAuthMaxBytes caps frames before a login: ApiVersions and SASL are tiny,
// and a stranger must not make us allocate 100 MiB.
const preAuthMaxBytes = 64 << 10

// Broker serves the Kafka protocol for one deployment.
type Broker struct {
	cfg   Config
	log   *slog.Logger
	clock Clock
	ln    net.Listener
	gate  *connhold.Gate // on ln's socket: shuts out sources refused past the holder's budget

	topics    *catalog
	groups    *coordinator
	producers *producerIDs
	txns      *txnCoordinator
	cleaner   compactionCounters
	quotas    *quotaBook

	// bufs holds the large buffers fetches are read and encoded into (and
	// produce requests read into), shared by the connections so that only
	// active requests hold one.
	bufs sync.Pool
	// fetchMem and requestMem bound what those requests hold at once.
	fetchMem, requestMem budgets

	mu      sync.Mutex
	conns   map[*conn]struct{}
	preAuth admission // the connections not logged in yet
	quiet   quietLogs
	locked  string // non-empty: the reason logins are refused
	closed  bool
	done    chan struct{}
	recheck chan struct{} // asks for a re-authorization sweep now
	bg      sync.WaitGroup
	serving sync.WaitGroup
}

// New opens the deployment's state from storage and listens, but does not
// accept connections until Serve.
func New(cfg Config) (*Broker, error) {
	const op = "broker.New"
	if cfg.Storage == nil {
		return nil, errs.E(op, errs.Invalid, "", "a storage is required")
	}
	if cfg.Listener == nil && cfg.Addr == "" {
		return nil, errs.E(op, errs.Invalid, "", "a listener or an address to listen on is required")
	}
	if cfg.Follower && cfg.Placement == nil {
		return nil, errs.E(op, errs.Invalid, "", "a follower needs a placement that names its leader")
	}
	if cfg.Authenticate == nil && cfg.Login == nil {
		return nil, errs.E(op, errs.Invalid, "", "an authenticator is required")
	}
	if cfg.Login == nil {
		cfg.Login = plainLogin(cfg.Authenticate)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.FetchMemory <= 0 {
		cfg.FetchMemory = DefaultFetchMemory
	}
	if cfg.RequestMemory <= 0 {
		cfg.RequestMemory = DefaultRequestMemory
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = int32(min(100<<20, cfg.RequestMemory))
	}
	if int64(cfg.MaxRequestBytes) > cfg.RequestMemory {
		return nil, errs.E(op, errs.Invalid, "", fmt.Sprintf("the largest request (%d bytes) must fit in the request memory (%d bytes)", cfg.MaxRequestBytes, cfg.RequestMemory))
	}
	if cfg.RetentionInterval <= 0 {
		cfg.RetentionInterval = time.Minute
	}
	if cfg.CompactionInterval <= 0 {
		cfg.CompactionInterval = 15 * time.Second
	}
	if cfg.MaxPartitions <= 0 {
		cfg.MaxPartitions = 1000
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = 1024
	}
	if cfg.MaxPreAuthConnections <= 0 {
		cfg.MaxPreAuthConnections = min(256, cfg.MaxConnections)
	}
	if cfg.MaxPreAuthPerIP <= 0 {
		cfg.MaxPreAuthPerIP = min(32, cfg.MaxPreAuthConnections)
	}
	if cfg.ConnectionRatePerIP <= 0 {
		cfg.ConnectionRatePerIP = DefaultConnectionRatePerIP
	}
	if cfg.ConnectionBurstPerIP <= 0 {
		cfg.ConnectionBurstPerIP = DefaultConnectionBurstPerIP
	}
	if cfg.Holder == nil {
		cfg.Holder = connhold.Process()
	}
	if cfg.LoginTimeout <= 0 {
		cfg.LoginTimeout = 10 * time.Second
	}
	if cfg.Reauthorize <= 0 {
		cfg.Reauthorize = 5 * time.Second
	}
	if cfg.ClusterID == "" {
		cfg.ClusterID = "keyline"
	}
	b := &Broker{cfg: cfg, log: cfg.Logger, clock: cfg.Clock, conns: map[*conn]struct{}{}, done: make(chan struct{}),
		recheck: make(chan struct{}, 1), preAuth: admission{perIP: map[string]int{}},
		fetchMem: newBudgets(cfg.FetchMemory, cfg.SharedFetchMemory), requestMem: newBudgets(cfg.RequestMemory, cfg.SharedRequestMemory)}
	var err error
	if b.topics, err = openCatalog(cfg.Storage, b.log); err != nil {
		return nil, errs.Internalf(op, err)
	}
	b.topics.limits = cfg.Limits.withDefaults(cfg.MaxRequestBytes)
	b.producers = newProducerIDs(cfg.Storage, cfg.AllocateProducerID)
	if b.quotas, err = newQuotaBook(cfg.Storage, cfg.Limits); err != nil {
		return nil, errs.Internalf(op, err)
	}
	b.groups = newCoordinator(cfg.Storage, b.clock, b.log)
	b.topics.onDelete = b.groups.forgetTopic
	b.txns = newTxnCoordinator(cfg.Storage, b.clock, b.log, b.topics, b.groups, b.producers)
	// A follower coordinates no group and no transaction: it holds none
	// (loading transactions finishes those a crash left prepared, which
	// is the leader's to do).
	if !cfg.Follower {
		if err := b.groups.load(); err != nil {
			return nil, errs.Internalf(op, err)
		}
		if err := b.txns.load(context.Background()); err != nil {
			return nil, errs.Internalf(op, err)
		}
	}
	ln := cfg.Listener
	if ln == nil {
		if ln, err = connhold.Listen("tcp", cfg.Addr); err != nil {
			return nil, errs.E(op, errs.Unavailable, "", "cannot listen").Because(err)
		}
	}
	b.gate = connhold.GateOf(ln, cfg.Holder.Delay())
	if cfg.TLS != nil {
		ln = tls.NewListener(ln, cfg.TLS)
	}
	b.ln = ln
	if b.cfg.AdvertisedHost == "" || b.cfg.AdvertisedPort == 0 {
		host, port, _ := net.SplitHostPort(ln.Addr().String())
		if b.cfg.AdvertisedHost == "" {
			b.cfg.AdvertisedHost = host
		}
		if b.cfg.AdvertisedPort == 0 {
			p, _ := strconv.Atoi(port)
			b.cfg.AdvertisedPort = int32(p)
		}
	}
	b.bg.Add(1)
	go func() { defer b.bg.Done(); b.runReauthorization() }()
	if !cfg.Follower { // a follower never writes the storage
		b.bg.Add(4)
		go func() { defer b.bg.Done(); b.txns.run(b.done) }()
		go func() { defer b.bg.Done(); b.groups.run(b.done) }()
		go func() { defer b.bg.Done(); b.runRetention() }()
		go func() { defer b.bg.Done(); b.runCompaction() }()
	}
	return b, nil
}

// maxPooledBuf bounds the buffers kept in the pool: a rare huge fetch
// does not pin its buffer. A fetch under a quota reads at most a second
// of it at once (quotaBook.reserve), 50 MiB on the largest plan: such
// buffers are reused rather than allocated, cleared and collected again
// for every fetch (a fifth of the server's CPU under soak's fetches).
const maxPooledBuf = 64 << 20

func (b *Broker) getBuf() *[]byte {
	if p, ok := b.bufs.Get().(*[]byte); ok {
		return p
	}
	return new([]byte)
}

func (b *Broker) putBuf(p *[]byte) {
	if cap(*p) <= maxPooledBuf {
		*p = (*p)[:0]
		b.bufs.Put(p)
	}
}

// FetchMemory reports the broker's own fetch budget: how much its fetch
// responses hold now, and the most they held at once.
func (b *Broker) FetchMemory() MemoryUse { return b.fetchMem[0].Use() }

// RequestMemory reports the broker's own request budget likewise.
func (b *Broker) RequestMemory() MemoryUse { return b.requestMem[0].Use() }

// Addr is the address the broker listens on.
func (b *Broker) Addr() net.Addr { return b.ln.Addr() }

// Serve accepts connections until ctx ends or Close is called.
func (b *Broker) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { b.Close() })
	defer stop()
	for {
		nc, err := b.ln.Accept()
		if err != nil {
			if b.isClosed() {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return err
		}
		c := b.newConn(nc)
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			nc.Close()
			return nil
		}
		if refusal := b.admit(c); refusal != "" {
			b.mu.Unlock()
			b.refuse(c, refusal)
			continue
		}
		b.serving.Add(1)
		b.mu.Unlock()
		go func() {
			defer b.serving.Done()
			c.serve(ctx)
			b.mu.Lock()
			b.forget(c)
			b.mu.Unlock()
		}()
	}
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// Lock closes every connection at once and refuses new logins with reason,
// e.g. "the deployment is locked: its key is disabled".
func (b *Broker) Lock(reason string) {
	if reason == "" {
		reason = "the deployment is locked"
	}
	b.mu.Lock()
	b.locked = reason
	conns := make([]*conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
	b.log.Info("broker locked", "connections_closed", len(conns))
}

// Unlock accepts logins again.
func (b *Broker) Unlock() {
	b.mu.Lock()
	b.locked = ""
	b.mu.Unlock()
	b.log.Info("broker unlocked")
}

// lockReason is non-empty while the broker is locked.
func (b *Broker) lockReason() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.locked
}

// Close stops listening, closes every connection and waits for them. The
// storage stays open: its owner closes it.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.done)
	conns := make([]*conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	err := b.ln.Close()
	for _, c := range conns {
		c.close()
	}
	b.serving.Wait()
	b.bg.Wait()
	return err
}
