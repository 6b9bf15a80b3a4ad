// Package streams runs Event Streams deployments (service "messagehub"): it
// provisions them against the customer's Key Protect keys, serves each one's
// Kafka listener over its encrypted log, and makes the key govern the data:
// rotation re-encrypts, disabling or deleting the key locks the deployment.
//
// The package talks to the control plane (KMS, IAM, resource controller)
// only through the small interfaces below, with its own plain types, so that
// internal/server adapts the real services to them.
package streams

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/cluster"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/broker"
	"github.com/keyline/keyline/internal/streams/objlog"
)

// ServiceName is the deployments' service name in CRNs, IAM and the KMS.
const ServiceName = "messagehub"

// Key states as Key Protect numbers them.
const (
	KeyActive      = 1
	KeySuspended   = 2 // disabled
	KeyDeactivated = 3 // expired
	KeyDestroyed   = 5 // deleted
)

// KeyInfo is what the deployment needs to know of a root key.
type KeyInfo struct {
	CRN          string
	Name         string
	State        int
	Extractable  bool // true for a standard key, which cannot wrap
	AccountID    string
	Region       string
	InstanceGUID string // the KMS instance holding the key
	Version      string // the latest key version
	Purged       bool   // deleted and purged: nothing can bring it back
}

// Key lifecycle actions a KeyEvent reports.
const (
	ActionRotate  = "rotate"
	ActionDisable = "disable"
	ActionEnable  = "enable"
	ActionDelete  = "delete"
	ActionRestore = "restore"
)

// Adopter key states sent back with an acknowledgement.
const (
	DEKEnabled   = "DEK_ENABLED"
	DEKDisabled  = "DEK_DISABLED"
	DEKDestroyed = "DEK_DESTROYED"
)

// KeyEvent is a lifecycle action on a key that deployments are registered
// on; it stays pending until acknowledged.
type KeyEvent struct {
	ID            string
	KeyCRN        string
	ResourceCRNs  []string // the registered deployments
	Action        string   // ActionRotate, ...
	KeyVersion    string   // the key's latest version after the action
	CorrelationID string
	Time          time.Time
}

// KeyService is the KMS as the deployments use it. Every call runs as the
// service principal in ctx, so the KMS checks the service-to-service
// authorization each time.
type KeyService interface {
	KeyInfo(ctx context.Context, keyCRN string) (KeyInfo, error)
	Wrap(ctx context.Context, keyCRN string, dek []byte, aad []string) (wrapped []byte, version string, err error)
	// Unwrap returns the DEK and, when it was wrapped by an older key
	// version, the DEK rewrapped with the latest one.
	Unwrap(ctx context.Context, keyCRN string, wrapped []byte, aad []string) (dek, rewrapped []byte, version string, err error)
	Rewrap(ctx context.Context, keyCRN string, wrapped []byte, aad []string) (rewrapped []byte, version string, err error)
	Register(ctx context.Context, keyCRN, resourceCRN, keyVersion string) error
	UpdateRegistration(ctx context.Context, keyCRN, resourceCRN, keyVersion string) error
	Unregister(ctx context.Context, keyCRN, resourceCRN string) error
	// PendingEvents lists the unacknowledged events for service messagehub.
	PendingEvents(ctx context.Context) ([]KeyEvent, error)
	// Notifications signals (without blocking the KMS) that events may be pending.
	Notifications() <-chan struct{}
	// AckEvent acknowledges ev once every registered deployment has acted
	// on it; ctx carries one of those deployments' principal.
	AckEvent(ctx context.Context, ev KeyEvent, adopterState, rewrappedVersion string) error
}

// Identity is IAM as the deployments use it: Kafka logins, the admin API's
// bearer tokens, dependent authorizations and service credentials.
type Identity interface {
	auth.Authenticator
	auth.Authorizer
	// ResourceGrants lists what p's access policies scoped to resource
	// types (topic, group, ...) give it within r's instance.
	ResourceGrants(ctx context.Context, p *auth.Principal, r auth.Resource) ([]auth.Grant, error)
	// CreateDependentAuthorization lets dependentService use target with role,
	// created by source (a deployment); it needs source's delegator role and
	// fails with errs.Permission otherwise.
	CreateDependentAuthorization(ctx context.Context, source *auth.Principal, dependentService string, target auth.Resource, role string) error
	// CreateServiceCredentials makes a service ID named serviceID with an API
	// key named name and an access policy granting role on the deployment.
	CreateServiceCredentials(ctx context.Context, accountID, deploymentGUID, serviceID, name, role string) (apikey, iamID string, err error)
}

// Tasks starts Cloud Databases style tasks on a deployment.
type Tasks interface {
	Start(ctx context.Context, deploymentCRN, description string) (Task, error)
}

// Task is a running task.
type Task interface {
	Progress(ctx context.Context, percent int) error
	Complete(ctx context.Context) error
	Fail(ctx context.Context, reason string) error
}

// InstanceStates is the resource controller's view of a deployment's state.
type InstanceStates interface {
	SetState(ctx context.Context, guid, state, reason string) error
}

// Instance is the resource instance being provisioned.
type Instance struct {
	GUID          string
	CRN           string
	AccountID     string
	Name          string
	Plan          string
	Region        string
	ResourceGroup string
}

// Config configures the Service.
type Config struct {
	DB        *store.DB
	Audit     *audit.Log
	Clock     clock.Clock
	Logger    *slog.Logger
	Keys      KeyService
	Identity  Identity
	Tasks     Tasks
	States    InstanceStates
	MasterKey *seal.AEAD // wraps service-managed DEKs of deployments without a key
	DataDir   string     // deployments live in <DataDir>/deployments/<guid>/

	// Kafka listeners bind ListenHost on a port in [PortMin, PortMax]; with
	// PortMin 0 the system picks a port (kept across restarts when free).
	ListenHost       string
	PortMin, PortMax int
	// AdvertisedHost is the host clients are told to connect to (default
	// ListenHost).
	AdvertisedHost string
	// AdminURL is the base URL of the Keyline HTTP listener, for credentials.
	AdminURL string
	// TLS, when set, makes every deployment's Kafka listener speak SASL_SSL
	// (as Event Streams does) instead of SASL_PLAINTEXT.
	TLS *tls.Config
	// Reauthorize is how often each deployment's broker checks its live
	// Kafka logins again (default 5 s). Revoked credentials are swept at
	// once whatever it is.
	Reauthorize time.Duration
	// MaxPreAuthConnections and MaxPreAuthPerIP cap each deployment's
	// Kafka connections that have not logged in, in all (default 256) and
	// from one source address (default 32); LoginTimeout is how long they
	// may take to log in (default 10 s). See broker.Config.
	MaxPreAuthConnections, MaxPreAuthPerIP int
	LoginTimeout                           time.Duration
	// PollInterval is how often pending key events are looked for when no
	// notification comes (default 30 s).
	PollInterval time.Duration
	// EventWait is how long the key-event loop waits for a deployment busy
	// with another operation (default 10 s) before it leaves that
	// deployment's events pending for a later round and carries on with the
	// others', so that one stuck deployment cannot hold up every key change.
	EventWait time.Duration
	// LeasedEvents says the caller runs the key-event loop (RunEvents)
	// itself, under the cluster's schedulers lease, so that one node
	// handles each event; otherwise Start runs it.
	LeasedEvents bool
	// SegmentBytes overrides the log's segment size (tests use small ones).
	SegmentBytes int64
	// Restorer restores a backup into a deployment provisioned with
	// parameter backup_id; without one, that parameter is refused.
	Restorer Restorer
	// FetchMemory bounds what every deployment's Kafka fetch responses
	// hold at once (default 1 GiB), DeploymentFetchMemory what one
	// deployment's do (default broker.DefaultFetchMemory); RequestMemory
	// and DeploymentRequestMemory bound large request frames (produce
	// requests) likewise (defaults 512 MiB and
	// broker.DefaultRequestMemory). See broker.Config.
	FetchMemory, DeploymentFetchMemory     int64
	RequestMemory, DeploymentRequestMemory int64
	// ObjectStore, when set, keeps every deployment's log in this bucket,
	// with its index and metadata in DB (PostgreSQL for a cluster), instead
	// of under DataDir. ObjectLog tunes it (flush window, cache); its
	// StoreID and Keys are set per deployment.
	ObjectStore *objlog.Bucket
	ObjectLog   objlog.Options
	// Members, on a shared (PostgreSQL) database, makes this node one of
	// the cluster's that all serve every deployment, each led by the node
	// holding its lease (cluster.go); Feed brings the other nodes' changes
	// to deployments. Without Members, or on SQLite, this node serves every
	// deployment alone.
	Members *cluster.Membership
	Feed    *cluster.Feed
}

// Service runs every deployment of this Keyline.
type Service struct {
	cfg    Config
	db     *store.DB
	audit  *audit.Log
	clock  clock.Clock
	log    *slog.Logger
	keys   KeyService
	iam    Identity
	tasks  Tasks
	states InstanceStates

	// fetchMem and requestMem are the process's Kafka memory budgets,
	// which every deployment's broker shares.
	fetchMem, requestMem *broker.MemoryBudget

	mu          sync.Mutex
	deployments map[string]*deployment // by GUID
	closed      bool

	stopLoop context.CancelFunc
	loop     sync.WaitGroup
	events   chan struct{} // wakes the event loop

	cl *clusterState // nil outside a cluster
}

// New opens the deployments' table. Call Start to bring them up.
func New(ctx context.Context, cfg Config) (*Service, error) {
	const op = "streams.New"
	if cfg.DB == nil || cfg.Audit == nil || cfg.Keys == nil || cfg.Identity == nil || cfg.Tasks == nil ||
		cfg.States == nil || cfg.MasterKey == nil || cfg.DataDir == "" {
		return nil, errs.E(op, errs.Invalid, "", "streams needs a database, an audit log, the KMS, IAM, tasks, instance states, a master key and a data directory")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ListenHost == "" {
		cfg.ListenHost = "127.0.0.1"
	}
	if cfg.AdvertisedHost == "" {
		cfg.AdvertisedHost = cfg.ListenHost
	}
	if cfg.PortMax < cfg.PortMin {
		return nil, errs.E(op, errs.Invalid, "", "the Kafka port range is empty")
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = 30 * time.Second
	}
	if cfg.EventWait <= 0 {
		cfg.EventWait = 10 * time.Second
	}
	if cfg.FetchMemory <= 0 {
		cfg.FetchMemory = 1 << 30
	}
	if cfg.RequestMemory <= 0 {
		cfg.RequestMemory = 512 << 20
	}
	if cfg.ObjectLog.Announced == nil {
		// Other nodes' follower brokers read the topics only: offset
		// commits and the like mark nothing in the change feed.
		cfg.ObjectLog.Announced = broker.FollowerReads
	}
	if err := cfg.DB.Migrate(ctx, append(migrations, loginMigration, clusterMigration)); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, db: cfg.DB, audit: cfg.Audit, clock: cfg.Clock, log: cfg.Logger, keys: cfg.Keys,
		iam: cfg.Identity, tasks: cfg.Tasks, states: cfg.States, deployments: map[string]*deployment{},
		events:   make(chan struct{}, 1),
		fetchMem: broker.NewMemoryBudget(cfg.FetchMemory), requestMem: broker.NewMemoryBudget(cfg.RequestMemory)}
	if cfg.Members != nil && cfg.DB.Shared() {
		if err := s.joinCluster(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// servicePrincipal is the identity a deployment acts as towards the KMS.
func servicePrincipal(accountID, guid, deploymentCRN string) *auth.Principal {
	return &auth.Principal{Type: auth.Service, ServiceName: ServiceName, AccountID: accountID, SourceInstance: guid,
		SourceCRN: deploymentCRN, IAMID: "crn-" + deploymentCRN, Name: ServiceName, CredentialType: "s2s-authorization"}
}

// asDeployment returns ctx acting as the deployment's service identity.
func asDeployment(ctx context.Context, accountID, guid, deploymentCRN string) context.Context {
	return auth.WithPrincipal(ctx, servicePrincipal(accountID, guid, deploymentCRN))
}

// Handler serves /messagehub/{guid} (the deployment's metadata) and
// /messagehub/{guid}/admin/... (its admin REST API).
func (s *Service) Handler() http.Handler { return s.handler() }
