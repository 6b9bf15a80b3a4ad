package e2e

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/client"
)

// The scenarios of the client matrix (docs/clients.md), each a subtest of
// every client's subtest, so `go test -v -run TestClientMatrix` reports the
// matrix cell by cell.
const (
	cellCreateCompacted = "CreateCompactedTopic"
	cellConfigs         = "AlterDescribeConfigs"
	cellTransactions    = "TransactionsReadCommitted"
	cellOffsetsForTimes = "OffsetsForTimesInBatch"
	cellDeleteGroup     = "DeleteGroupAndOffsets"
	cellOAuthBearer     = "OAuthBearerIAMToken"
)

// matrix is what every client of the matrix shares: one `keyline serve`
// (the built binary), one deployment, and a Manager's credentials.
type matrix struct {
	url     string
	manager kafkaCreds
	// apikey is the manager's API key: token() exchanges it for an IAM
	// access token, as an application does.
	apikey string
}

func (m *matrix) token(t testing.TB) string { return iamToken(t, m.url, m.apikey) }

// clientMatrixCase is one client's row: a function per scenario.
type clientMatrixCase map[string]func(t *testing.T, m *matrix, topic string)

// TestClientMatrix drives one Keyline deployment with each Kafka client a
// user may bring (franz-go, IBM/sarama, segmentio/kafka-go, kcat, Python's
// confluent-kafka on librdkafka, KafkaJS), each through its own API:
// a compacted topic created with configs, configs altered and described,
// transactions committed and aborted and read back read_committed, offsets
// for timestamps inside a batch, a group's offsets and the group deleted,
// and a login with an IAM access token over SASL OAUTHBEARER. A cell the
// client cannot do is skipped with the reason, as docs/clients.md says.
func TestClientMatrix(t *testing.T) {
	p := serveProcess(t, t.TempDir())
	a := &api{t: t, c: client.New(p.url, adminKey)}
	dep := a.provisionDeployment(a.keyProtect("matrix-kp"), "matrix")
	m := &matrix{url: p.url, manager: dep.manager, apikey: dep.manager.APIKey}

	rows := []struct {
		name  string
		cells clientMatrixCase
	}{
		{"franz-go", franzMatrix},
		{"sarama", saramaMatrix},
		{"kafka-go", kafkaGoMatrix},
		{"kcat", kcatMatrix},
		{"python-confluent-kafka", pythonMatrix},
		{"kafkajs", kafkaJSMatrix},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			for _, cell := range []string{cellCreateCompacted, cellConfigs, cellTransactions, cellOffsetsForTimes, cellDeleteGroup, cellOAuthBearer} {
				t.Run(cell, func(t *testing.T) {
					do := row.cells[cell]
					if do == nil {
						t.Fatalf("no %s cell for %s", cell, row.name)
					}
					do(t, m, strings.ToLower(row.name+"-"+cell))
				})
			}
		})
	}
}

// notSupported skips a cell the client cannot do, saying why; the reason
// is the one docs/clients.md gives.
func notSupported(reason string) func(*testing.T, *matrix, string) {
	return func(t *testing.T, _ *matrix, _ string) { t.Skip("n/a: " + reason) }
}

// requireClient skips when a client the matrix runs as a program is not
// installed (installed is false), unless KEYLINE_REQUIRE_CLIENTS is set
// (scripts/test sets it, after installing them): then it fails the test.
func requireClient(t *testing.T, installed bool, what, install string) {
	t.Helper()
	if installed {
		return
	}
	if os.Getenv("KEYLINE_REQUIRE_CLIENTS") != "" {
		t.Fatalf("%s is not installed; scripts/test installs it (%s)", what, install)
	}
	t.Skipf("%s is not installed (%s)", what, install)
}

// The matrix's common data. Every client's compacted topic is created with
// these configs, then retention.ms is altered to matrixRetention.
var (
	matrixTopicConfigs = map[string]string{"cleanup.policy": "compact", "min.compaction.lag.ms": "1000", "segment.bytes": "1048576"}
	matrixRetention    = "86400000"
	// matrixBatchTime is the first of three timestamps, a second apart, of
	// the records produced in one batch for the offsets-for-times cell.
	matrixBatchTime = time.Now().Add(-time.Hour).Truncate(time.Second)
)

// checkTopicConfigs fails unless described holds every config of want.
func checkTopicConfigs(t *testing.T, described map[string]string, want map[string]string) {
	t.Helper()
	var bad []string
	for k, v := range want {
		if described[k] != v {
			bad = append(bad, fmt.Sprintf("%s=%q, want %q", k, described[k], v))
		}
	}
	sort.Strings(bad)
	if len(bad) > 0 {
		t.Fatalf("described configs: %s", strings.Join(bad, "; "))
	}
}

// withRetention is matrixTopicConfigs after the alter.
func withRetention() map[string]string {
	out := map[string]string{"retention.ms": matrixRetention}
	for k, v := range matrixTopicConfigs {
		out[k] = v
	}
	return out
}

// batchRecords are the three records, one batch, of the offsets-for-times
// cell: timestamps matrixBatchTime, +1s, +2s at offsets 0, 1, 2.
func batchRecords(topic string) []*kgo.Record {
	rs := make([]*kgo.Record, 3)
	for i := range rs {
		rs[i] = &kgo.Record{Topic: topic, Value: fmt.Appendf(nil, "at-%d", i), Timestamp: matrixBatchTime.Add(time.Duration(i) * time.Second)}
	}
	return rs
}

// produceOneBatch produces rs in one record batch with franz-go, for the
// clients that cannot set record timestamps themselves.
func produceOneBatch(t *testing.T, m *matrix, rs []*kgo.Record) {
	t.Helper()
	// With manual flushing nothing is sent before Flush: one batch.
	cl := franz(t, m.manager, kgo.ManualFlushing(), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	ctx := testCtx(t)
	errc := make(chan error, len(rs))
	for _, r := range rs {
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) { errc <- err })
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	for range rs {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// offsetQueries are the timestamps the offsets-for-times cell asks about
// and the offsets Kafka answers: the first record at or after each. Two
// fall inside the batch, past its first record.
var offsetQueries = []struct {
	at   time.Time
	want int64
}{
	{matrixBatchTime.Add(-time.Minute), 0},
	{matrixBatchTime.Add(500 * time.Millisecond), 1},
	{matrixBatchTime.Add(2 * time.Second), 2},
}

// txnWant is what a read_committed consumer reads after the transactions
// cell: two committed transactions around an aborted one.
var txnWant = []string{"committed-1", "committed-2", "committed-3"}

// readCommittedMatches fails unless got is txnWant.
func readCommittedMatches(t *testing.T, got []string) {
	t.Helper()
	if strings.Join(got, ",") != strings.Join(txnWant, ",") {
		t.Fatalf("read_committed read %q, want %q (the aborted transaction's record must not be read)", got, txnWant)
	}
}

// errNotRefused is a login with a bad token that the broker took.
var errNotRefused = errors.New("a made-up token logged in")
