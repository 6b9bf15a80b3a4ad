package streams

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/oauth"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/iam/iamtest"
)

// realKafka is a deployment served over the real IAM, whose clock the
// broker shares so that tests can make tokens expire.
type realKafka struct {
	env     *iamtest.Env
	svc     *Service
	guid    string
	brokers []string
}

func startRealKafka(t *testing.T, params map[string]any) *realKafka {
	t.Helper()
	env := iamtest.New(t)
	svc := startService(t, Config{DB: env.DB, Audit: env.Audit, Keys: newTestKMS(), Identity: kafkaIdentity{env.Service}, Clock: env.Clock,
		Tasks: &testTasks{}, States: &testStates{}, MasterKey: mustSeal(t), DataDir: filepath.Join(t.TempDir(), "data"),
		Reauthorize: 200 * time.Millisecond})
	guid := uuid.NewString()
	inst := Instance{GUID: guid, CRN: crn.New(ServiceName, "us-south", env.Account.ID, guid).String(), AccountID: env.Account.ID,
		Name: "kauth", Plan: "standard", Region: "us-south"}
	if _, err := svc.Provision(env.AsAdmin(), inst, params); err != nil {
		t.Fatal(err)
	}
	c := realCredentials(t, env, svc, inst, "manager", auth.RoleManager)
	k := &realKafka{env: env, svc: svc, guid: guid, brokers: c["kafka_brokers_sasl"].([]string)}
	if tokenOnly, _ := params[ParamIAMTokenOnly].(bool); !tokenOnly {
		manager := newClient(t, k.brokers, "token", c["api_key"].(string))
		for _, topic := range []string{"orders", "payments"} {
			createTopic(t, manager, topic, 1)
		}
	}
	return k
}

// kafkaIdentity is the real IAM for Kafka logins (internal/server's adapter
// is out of this package's reach); these tests make no dependent
// authorizations.
type kafkaIdentity struct{ *iam.Service }

func (kafkaIdentity) CreateDependentAuthorization(context.Context, *auth.Principal, string, auth.Resource, string) error {
	return errs.E("streams.test", errs.Internal, "", "Kafka login tests make no dependent authorizations")
}

// realCredentials mints credentials with role on a deployment in the real
// IAM (a service ID, its API key, an access policy), as internal/server
// does for a resource key, and gives them in Event Streams' shape.
func realCredentials(t testing.TB, env *iamtest.Env, svc *Service, inst Instance, name, role string) map[string]any {
	t.Helper()
	sid, err := env.Service.CreateServiceID(env.AsAdmin(), iam.ServiceIDRequest{AccountID: inst.AccountID, Name: "ServiceId-" + uuid.NewString()})
	if err != nil {
		t.Fatal(err)
	}
	_, apikey, err := env.Service.CreateAPIKey(env.AsAdmin(), iam.APIKeyRequest{Name: name, IAMID: sid.IAMID})
	if err != nil {
		t.Fatal(err)
	}
	env.Grant(t, sid.IAMID, auth.Resource{AccountID: inst.AccountID, ServiceName: ServiceName, ServiceInstance: inst.GUID}, role)
	c, err := svc.Credentials(inst.GUID, ServiceCredentials{APIKey: apikey, IAMID: sid.IAMID, Name: name, Role: role})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// startService starts a streams service until the test ends.
func startService(t *testing.T, cfg Config) *Service {
	t.Helper()
	svc, err := New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// instance is the deployment as an IAM resource, scoped when typ is set.
func (k *realKafka) instance(typ, name string) auth.Resource {
	return auth.Resource{AccountID: k.env.Account.ID, ServiceName: ServiceName, ServiceInstance: k.guid, ResourceType: typ, ResourceID: name}
}

// token is a fresh IAM access token for the API key.
func (k *realKafka) token(t testing.TB, apikey string) string {
	tok, err := k.env.Service.Token(context.Background(), iam.TokenRequest{GrantType: iam.GrantAPIKey, APIKey: apikey})
	if err != nil {
		t.Error(err)
	}
	return tok.AccessToken
}

// oauthClient is a franz-go client logging in with SASL OAUTHBEARER and a
// token from IAM, fetched anew at every login.
func (k *realKafka) oauthClient(t testing.TB, tokens func() string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	all := append([]kgo.Opt{kgo.SeedBrokers(k.brokers...), kgo.RetryTimeout(5 * time.Second), kgo.DisableIdempotentWrite(),
		kgo.SASL(oauth.Oauth(func(context.Context) (oauth.Auth, error) { return oauth.Auth{Token: tokens()}, nil }))}, opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produceErr(ctx context.Context, cl *kgo.Client, topic string) error {
	return cl.ProduceSync(ctx, &kgo.Record{Topic: topic, Value: []byte("v")}).FirstErr()
}

// hangups counts a client's closed connections.
type hangups struct{ n atomic.Int32 }

func (d *hangups) OnBrokerDisconnect(kgo.BrokerMetadata, net.Conn) { d.n.Add(1) }

func TestKafkaOAuthBearerWithIAMTokensAndScopedPolicies(t *testing.T) {
	k := startRealKafka(t, nil)
	u, key := k.env.NewUser(t, "dev@example.com")
	k.env.Grant(t, u.IAMID, k.instance("cluster", ""), auth.RoleReader)
	topicPolicy := k.env.Grant(t, u.IAMID, k.instance("topic", "orders"), auth.RoleWriter)

	var logins atomic.Int32
	d := &hangups{}
	cl := k.oauthClient(t, func() string { logins.Add(1); return k.token(t, key) }, kgo.WithHooks(d))
	ctx := testCtx(t)
	if err := produceErr(ctx, cl, "orders"); err != nil {
		t.Fatalf("produce to the topic the policy names: %v", err)
	}
	if err := produceErr(ctx, cl, "payments"); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("produce to another topic: %v, want TOPIC_AUTHORIZATION_FAILED", err)
	}

	t.Run("sarama TokenProvider", func(t *testing.T) {
		cfg := sarama.NewConfig()
		cfg.Net.SASL.Enable, cfg.Net.SASL.Mechanism = true, sarama.SASLTypeOAuth
		cfg.Net.SASL.TokenProvider = saramaTokens(func() string { return k.token(t, key) })
		cfg.Producer.Return.Successes = true
		prod, err := sarama.NewSyncProducer(k.brokers, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer prod.Close()
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "orders", Value: sarama.StringEncoder("s")}); err != nil {
			t.Fatal(err)
		}
		adm, err := sarama.NewClusterAdmin(k.brokers, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer adm.Close()
		topics, err := adm.ListTopics()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := topics["orders"]; !ok || len(topics) != 1 {
			t.Fatalf("listed %v: want only orders, the topic the policy names", topics)
		}
	})

	t.Run("an expired token is refused without being echoed", func(t *testing.T) {
		old := k.token(t, key)
		k.env.Clock.Advance(iam.AccessTokenTTL + time.Minute)
		err := k.oauthClient(t, func() string { return old }).Ping(testCtx(t))
		if !errors.Is(err, kerr.SaslAuthenticationFailed) || !strings.Contains(err.Error(), "not valid or has expired") || strings.Contains(err.Error(), old) {
			t.Fatalf("login with an expired token: %v", err)
		}
	})

	t.Run("a token expiring on a live connection closes it", func(t *testing.T) {
		// The clock jump above expired the first client's token: its next
		// request closes its connection, and it logs in again with a
		// fresh token.
		before, closed := logins.Load(), d.n.Load()
		eventually(t, "the client works again with a fresh token", func() bool { return produceErr(testCtx(t), cl, "orders") == nil })
		if logins.Load() == before || d.n.Load() == closed {
			t.Fatalf("logins %d -> %d, hangups %d -> %d: want the expired connection closed and a new login", before, logins.Load(), closed, d.n.Load())
		}
	})

	t.Run("a deleted topic policy reaches the live connection", func(t *testing.T) {
		if err := k.env.Service.DeletePolicy(k.env.AsAdmin(), topicPolicy.ID); err != nil {
			t.Fatal(err)
		}
		eventually(t, "produce is refused", func() bool {
			return errors.Is(produceErr(testCtx(t), cl, "orders"), kerr.TopicAuthorizationFailed)
		})
	})
}

// saramaTokens is a sarama AccessTokenProvider.
type saramaTokens func() string

func (f saramaTokens) Token() (*sarama.AccessToken, error) {
	return &sarama.AccessToken{Token: f()}, nil
}

func TestIAMTokenOnlyDeploymentRefusesPlain(t *testing.T) {
	k := startRealKafka(t, map[string]any{ParamIAMTokenOnly: true})
	u, key := k.env.NewUser(t, "dev@example.com")
	k.env.Grant(t, u.IAMID, k.instance("", ""), auth.RoleManager)
	err := newClient(t, k.brokers, "token", key).Ping(testCtx(t))
	if !errors.Is(err, kerr.SaslAuthenticationFailed) || !strings.Contains(err.Error(), "accepts IAM access tokens only") {
		t.Fatalf("PLAIN login: %v, want a refusal saying tokens only", err)
	}
	if err := k.oauthClient(t, func() string { return k.token(t, key) }).Ping(testCtx(t)); err != nil {
		t.Fatalf("OAUTHBEARER login: %v", err)
	}
	if err := k.svc.UpdateParameters(k.env.AsAdmin(), k.guid, map[string]any{ParamIAMTokenOnly: false}); err != nil {
		t.Fatal(err)
	}
	if err := newClient(t, k.brokers, "token", key).Ping(testCtx(t)); err != nil {
		t.Fatalf("PLAIN login once allowed again: %v", err)
	}
	if err := k.svc.UpdateParameters(k.env.AsAdmin(), k.guid, map[string]any{ParamIAMTokenOnly: "yes"}); err == nil || !strings.Contains(err.Error(), "must be true") {
		t.Fatalf("a non-boolean setting: %v", err)
	}
}
