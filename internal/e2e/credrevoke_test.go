package e2e

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/server"
)

// TestDeletedResourceKeyCutsKafkaConnections deletes the resource key whose
// credentials a producer is connected with: a new login with them is refused,
// the producer's live connection is cut and its next produce fails, while the
// deployment's other credentials, live connections included, keep working.
func TestDeletedResourceKeyCutsKafkaConnections(t *testing.T) {
	// The periodic check is set far beyond the test's deadlines, so only
	// the sweep that deleting the key triggers can cut the connection.
	e := startIn(t, t.TempDir(), clock.NewFake(time.Now().UTC().Truncate(time.Second)), func(c *server.Config) { c.KafkaReauthorize = time.Hour })
	admin := e.as(e.admin)
	dep := admin.provisionDeployment(admin.keyProtect("revoke-kp"), "revoke")
	createTopic(t, dep.manager, "revoked", 1)
	doomed := admin.credentials(dep.guid, "revoke-doomed", "Writer")

	// Not idempotent, so that a produce that cannot be delivered fails
	// within its delivery timeout instead of waiting for a producer id.
	old := franz(t, doomed, kgo.DefaultProduceTopic("revoked"), kgo.DisableIdempotentWrite(),
		kgo.RetryTimeout(2*time.Second), kgo.RecordDeliveryTimeout(5*time.Second))
	produceValues(t, old, "revoked", numbered("before", 0, 5))
	other := franz(t, dep.writer, kgo.DefaultProduceTopic("revoked"))
	produceValues(t, other, "revoked", numbered("other", 0, 5))

	account, _ := admin.account()
	serviceIDs := func() int {
		q := url.Values{"account_id": {account}, "name": {"ServiceId-" + doomed.KeyGUID}}
		return len(admin.must("GET", "/v1/serviceids?"+q.Encode(), nil, nil)["serviceids"].([]any))
	}
	if n := serviceIDs(); n != 1 {
		t.Fatalf("%d service IDs named after the resource key, want 1", n)
	}

	admin.must("DELETE", client.Path("v2", "resource_keys", doomed.KeyGUID), nil, nil)
	if n := serviceIDs(); n != 0 {
		t.Fatalf("the resource key's service ID outlived it (%d left)", n)
	}

	err := franz(t, doomed, kgo.RetryTimeout(time.Second)).Ping(testCtx(t))
	if !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("a new login with deleted credentials: %v, want SASL_AUTHENTICATION_FAILED", err)
	}
	// Without the cut, the old connection would keep answering Ping; once
	// cut, the client's reconnection is refused.
	waitFor(t, 15*time.Second, "the old connection to lose access", func() bool {
		return errors.Is(old.Ping(testCtx(t)), kerr.SaslAuthenticationFailed)
	})
	if err := old.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("after")}).FirstErr(); err == nil {
		t.Fatal("the old connection produced after its resource key was deleted")
	}

	produceValues(t, other, "revoked", numbered("other", 5, 5))
	produceValues(t, franz(t, dep.writer, kgo.DefaultProduceTopic("revoked")), "revoked", numbered("fresh", 0, 5))
	cons := franz(t, dep.reader, kgo.ConsumeTopics("revoked"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if got := recordValues(consumeRecords(t, cons, 20)); len(got) != 20 {
		t.Fatalf("read %d records, want 20: %v", len(got), got)
	}
}
