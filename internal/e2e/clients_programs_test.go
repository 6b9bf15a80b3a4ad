package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// The rows of the client matrix whose clients are programs: kcat, a Python
// script on python3-confluent-kafka, and a Node script on KafkaJS, each
// under testdata/clients/ and printing JSON the cells check.

const (
	systemPython = "/usr/bin/python3" // Debian's, which python3-confluent-kafka installs into
	pythonScript = "testdata/clients/confluent_kafka_matrix.py"
	kafkaJSDir   = "testdata/clients/kafkajs"
)

// cellData is what a script's cell gets in KEYLINE_CELL_DATA.
type cellData struct {
	Configs    map[string]string `json:"configs,omitempty"`
	Retention  string            `json:"retention,omitempty"`
	Timestamps []int64           `json:"timestamps,omitempty"`
	Queries    []int64           `json:"queries,omitempty"`
}

// cellResult is what a script's cell prints.
type cellResult struct {
	Configs         map[string]string `json:"configs"`
	ReadCommitted   []string          `json:"read_committed"`
	ReadUncommitted []string          `json:"read_uncommitted"`
	Offsets         []int64           `json:"offsets"`
	Read            []string          `json:"read"`
	Committed       map[string]int64  `json:"committed"`
	Deleted         []string          `json:"deleted"`
	Listed          []string          `json:"listed"`
}

// runCell runs argv with the deployment and data in its environment and
// decodes the JSON it prints.
func runCell(t *testing.T, m *matrix, topic string, data cellData, env []string, argv ...string) cellResult {
	t.Helper()
	raw, _ := json.Marshal(data)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), "KEYLINE_BOOTSTRAP="+strings.Join(m.manager.Brokers, ","), "KEYLINE_APIKEY="+m.apikey,
		"KEYLINE_URL="+m.url, "KEYLINE_TOPIC="+topic, "KEYLINE_CELL_DATA="+string(raw)), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", strings.Join(argv, " "), err, stdout.String(), stderr.String())
	}
	var out cellResult
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
		t.Fatalf("%s printed %q: %v\nstderr: %s", strings.Join(argv, " "), stdout.String(), err, stderr.String())
	}
	return out
}

// scriptCells are the cells a script row runs the same way: the script's
// cell name, the data it gets, and the check of what it prints.
func scriptCells(run func(t *testing.T, m *matrix, topic, cell string, data cellData) cellResult) clientMatrixCase {
	return clientMatrixCase{
		cellCreateCompacted: func(t *testing.T, m *matrix, topic string) {
			checkTopicConfigs(t, run(t, m, topic, "create", cellData{Configs: matrixTopicConfigs}).Configs, matrixTopicConfigs)
		},
		cellConfigs: func(t *testing.T, m *matrix, topic string) {
			out := run(t, m, topic, "configs", cellData{Configs: matrixTopicConfigs, Retention: matrixRetention})
			checkTopicConfigs(t, out.Configs, withRetention())
		},
		cellTransactions: func(t *testing.T, m *matrix, topic string) {
			createTopic(t, m.manager, topic, 1)
			out := run(t, m, topic, "transactions", cellData{})
			readCommittedMatches(t, out.ReadCommitted)
			if !slices.Contains(out.ReadUncommitted, "aborted-1") {
				t.Fatalf("read_uncommitted read %q: the aborted record never reached the log", out.ReadUncommitted)
			}
		},
		cellOffsetsForTimes: func(t *testing.T, m *matrix, topic string) {
			createTopic(t, m.manager, topic, 1)
			data := cellData{}
			for _, r := range batchRecords(topic) {
				data.Timestamps = append(data.Timestamps, r.Timestamp.UnixMilli())
			}
			for _, q := range offsetQueries {
				data.Queries = append(data.Queries, q.at.UnixMilli())
			}
			checkOffsetAnswers(t, run(t, m, topic, "offsets-for-times", data).Offsets)
		},
		cellOAuthBearer: func(t *testing.T, m *matrix, topic string) {
			createTopic(t, m.manager, topic, 1)
			if got := run(t, m, topic, "oauthbearer", cellData{}).Read; len(got) != 1 || got[0] != "over-oauthbearer" {
				t.Fatalf("read %q over OAUTHBEARER", got)
			}
		},
	}
}

func checkOffsetAnswers(t *testing.T, got []int64) {
	t.Helper()
	if len(got) != len(offsetQueries) {
		t.Fatalf("%d answers to %d queries", len(got), len(offsetQueries))
	}
	for i, q := range offsetQueries {
		if got[i] != q.want {
			t.Errorf("offset for %v: %d, want %d", q.at, got[i], q.want)
		}
	}
}

// pythonMatrix is python3-confluent-kafka's row (librdkafka underneath).
var pythonMatrix = func() clientMatrixCase {
	c := scriptCells(func(t *testing.T, m *matrix, topic, cell string, data cellData) cellResult {
		err := exec.Command(systemPython, "-c", "import confluent_kafka").Run()
		requireClient(t, err == nil, "Python's confluent_kafka", "apt-get install python3-confluent-kafka")
		return runCell(t, m, topic, data, nil, systemPython, pythonScript, cell)
	})
	c[cellDeleteGroup] = notSupported("python3-confluent-kafka 1.7.0 (Debian 12) has no AdminClient.delete_consumer_groups and no offset delete (they came in confluent-kafka 1.9 and 2.0)")
	return c
}()

// kafkaJSMatrix is KafkaJS's row.
var kafkaJSMatrix = func() clientMatrixCase {
	run := func(t *testing.T, m *matrix, topic, cell string, data cellData) cellResult {
		return runCell(t, m, topic, data, []string{"NODE_PATH=" + kafkaJSModules(t)}, "node", filepath.Join(kafkaJSDir, "matrix.js"), cell)
	}
	c := scriptCells(run)
	c[cellDeleteGroup] = func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 2)
		out := run(t, m, topic, "delete-group", cellData{})
		if out.Committed["0"] != 5 || out.Committed["1"] != 7 {
			t.Fatalf("offsets set with admin.setOffsets: %v, want 0:5 1:7", out.Committed)
		}
		if !slices.Equal(out.Deleted, []string{topic}) || slices.Contains(out.Listed, topic) {
			t.Fatalf("admin.deleteGroups answered %q; the groups listed after: %q", out.Deleted, out.Listed)
		}
	}
	return c
}()

var (
	kafkaJSOnce sync.Once
	kafkaJSPath string
	kafkaJSErr  string
)

// kafkaJSModules installs the locked KafkaJS with `npm ci` once, into a
// directory of the temporary directory named for the lock file's hash, and
// returns its node_modules.
func kafkaJSModules(t *testing.T) string {
	t.Helper()
	_, errNode := exec.LookPath("node")
	_, errNpm := exec.LookPath("npm")
	requireClient(t, errNode == nil && errNpm == nil, "node and npm", "apt-get install nodejs npm")
	kafkaJSOnce.Do(func() {
		lock, err := os.ReadFile(filepath.Join(kafkaJSDir, "package-lock.json"))
		if err != nil {
			kafkaJSErr = err.Error()
			return
		}
		sum := sha256.Sum256(lock)
		dir := filepath.Join(os.TempDir(), "keyline-kafkajs-"+hex.EncodeToString(sum[:8]))
		mods := filepath.Join(dir, "node_modules")
		if _, err := os.Stat(filepath.Join(mods, "kafkajs", "package.json")); err == nil {
			kafkaJSPath = mods
			return
		}
		os.MkdirAll(dir, 0o755)
		for _, f := range []string{"package.json", "package-lock.json"} {
			b, _ := os.ReadFile(filepath.Join(kafkaJSDir, f))
			os.WriteFile(filepath.Join(dir, f), b, 0o644)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts")
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			kafkaJSErr = "npm ci: " + err.Error() + "\n" + string(out)
			return
		}
		kafkaJSPath = mods
	})
	if kafkaJSErr != "" {
		t.Fatal(kafkaJSErr)
	}
	return kafkaJSPath
}

// kcatMatrix is kcat's row: a producer, consumer and query tool, without
// admin commands or a way to hand librdkafka an OAUTHBEARER token.
var kcatMatrix = clientMatrixCase{
	cellCreateCompacted: notSupported("kcat has no admin commands: it cannot create topics"),
	cellConfigs:         notSupported("kcat has no admin commands: it cannot alter or describe configs"),
	cellTransactions: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 1)
		txn := []string{"-P", "-t", topic, "-p", "0", "-X", "transactional.id=" + topic}
		for _, in := range []string{"committed-1\ncommitted-2\n", ""} {
			if in == "" {
				franzAbort(t, m, topic)
				in = "committed-3\n"
			}
			if _, errOut, err := kcat(t, m.manager, in, txn...); err != nil {
				t.Fatalf("kcat transactional produce: %v\n%s", err, errOut)
			}
		}
		out, errOut, err := kcat(t, m.manager, "", "-C", "-t", topic, "-o", "beginning", "-e", "-X", "isolation.level=read_committed")
		if err != nil {
			t.Fatalf("kcat read_committed: %v\n%s", err, errOut)
		}
		readCommittedMatches(t, strings.Fields(out))
	},
	cellOffsetsForTimes: func(t *testing.T, m *matrix, topic string) {
		createTopic(t, m.manager, topic, 1)
		// kcat cannot set a record's timestamp: franz-go produces the batch.
		produceOneBatch(t, m, batchRecords(topic))
		var got []int64
		for _, q := range offsetQueries {
			out, errOut, err := kcat(t, m.manager, "", "-Q", "-t", topic+":0:"+strconv.FormatInt(q.at.UnixMilli(), 10))
			if err != nil {
				t.Fatalf("kcat -Q: %v\n%s", err, errOut)
			}
			// "<topic> [0] offset <n>"
			f := strings.Fields(out)
			if len(f) < 4 || f[2] != "offset" {
				t.Fatalf("kcat -Q printed %q", out)
			}
			o, err := strconv.ParseInt(f[3], 10, 64)
			if err != nil {
				t.Fatalf("kcat -Q printed %q", out)
			}
			got = append(got, o)
		}
		checkOffsetAnswers(t, got)
	},
	cellDeleteGroup: notSupported("kcat has no admin commands: it cannot delete groups or their offsets"),
	cellOAuthBearer: notSupported("librdkafka takes an OAUTHBEARER token only from an application's token refresh callback (or OIDC client credentials, which IAM's API-key grant is not); kcat's command line cannot supply one"),
}

// franzAbort produces aborted-1 in a franz-go transaction and aborts it:
// kcat aborts only when interrupted, and holds a record read from a pipe
// unsent while its input stays open.
func franzAbort(t *testing.T, m *matrix, topic string) {
	t.Helper()
	cl := franz(t, m.manager, kgo.TransactionalID(topic+"-abort"), kgo.DefaultProduceTopic(topic))
	ctx := testCtx(t)
	if err := cl.BeginTransaction(); err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, kgo.StringRecord("aborted-1")).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if err := cl.EndTransaction(ctx, kgo.TryAbort); err != nil {
		t.Fatal(err)
	}
}
