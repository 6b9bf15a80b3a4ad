package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/keyline/keyline/internal/backup"
	"github.com/keyline/keyline/internal/backup/volume/volumetest"
	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/server"
)

// TestBackupRestoreServesTheSameRecordsToKafkaClients backs up a deployment
// with real Kafka traffic under its own backup key and restores it into a
// new deployment, which serves the same records (keys, values, headers,
// timestamps) at the same offsets, the same log-start offsets, topic
// configs and committed group offsets. No backup file holds the data in
// plain form.
func TestBackupRestoreServesTheSameRecordsToKafkaClients(t *testing.T) {
	e := start(t)
	canary := backupRoundTrip(t, e)
	assertNoCanary(t, filepath.Join(e.dir, "backups"), canary)
}

// TestBackupRoundTripThroughS3 is the same round trip with the backup
// volumes in an S3 bucket (versitygw).
func TestBackupRoundTripThroughS3(t *testing.T) {
	s3 := volumetest.StartS3(t)
	e := startIn(t, t.TempDir(), clock.NewFake(time.Now().UTC().Truncate(time.Second)), func(c *server.Config) {
		c.Backups = backup.VolumeConfig{Kind: "s3", S3: s3.Config("keyline-backups", "")}
	})
	canary := backupRoundTrip(t, e)
	if _, err := os.Stat(filepath.Join(e.dir, "backups")); err == nil {
		t.Fatal("with an S3 volume, backups were written to the data directory")
	}
	assertNoCanary(t, s3.DataDir, canary)
}

// backupRoundTrip runs the round trip on e and returns the canary its
// records hold.
func backupRoundTrip(t *testing.T, e *env) string {
	b := newBYOK(t, e)
	src := b.deployment("orders-src")
	canary := "CANARY-" + uuid.NewString()
	adm, cl, consumer := kafkaAdmin(t, b.admin, src)
	ctx := t.Context()
	if _, err := adm.CreateTopic(ctx, 3, 1, map[string]*string{"retention.ms": ptr("604800000")}, "orders"); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.CreateTopic(ctx, 1, 1, nil, "quiet"); err != nil {
		t.Fatal(err)
	}
	for i := range 300 {
		r := &kgo.Record{Topic: "orders", Partition: int32(i % 3), Key: fmt.Appendf(nil, "key-%d", i),
			Value:   fmt.Appendf(nil, "%s value %d %s", canary, i, strings.Repeat("x", i%50)),
			Headers: []kgo.RecordHeader{{Key: "trace", Value: fmt.Appendf(nil, "t-%d", i)}, {Key: "canary", Value: []byte(canary)}}}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	// Retention moved partition 0's log-start offset; a group committed.
	if _, err := adm.DeleteRecords(ctx, kadm.Offsets{"orders": {0: {Topic: "orders", Partition: 0, At: 17}}}); err != nil {
		t.Fatal(err)
	}
	commits := kadm.Offsets{}
	commits.AddOffset("orders", 0, 40, -1)
	commits.AddOffset("orders", 1, 55, -1)
	commits.AddOffset("orders", 2, 100, -1)
	if _, err := adm.CommitOffsets(ctx, "billing", commits); err != nil {
		t.Fatal(err)
	}
	want := readAll(t, consumer(), 300-17)

	task := b.admin.backupNow(src["crn"].(string))
	if task["status"] != "running" {
		t.Fatalf("a new backup task is running: %s", dump(task))
	}
	task = b.admin.waitTask(task["id"].(string))
	if task["status"] != "completed" || task["progress_percent"] != float64(100) {
		t.Fatalf("backup task: %s", dump(task))
	}
	list := b.admin.backups(src["crn"].(string))
	if len(list) != 1 {
		t.Fatalf("backups: %s", dump(list))
	}
	bk := list[0]
	if bk["type"] != "on_demand" || bk["status"] != "completed" || bk["is_restorable"] != true || bk["deployment_id"] != src["crn"] ||
		!strings.HasPrefix(bk["id"].(string), strings.TrimSuffix(src["crn"].(string), "::")+":backup:") || bk["encryption_key_crn"] != b.keyCRN {
		t.Fatalf("backup in the Cloud Databases shape, under the backup key: %s", dump(bk))
	}
	id := bk["id"].(string)
	if got := b.admin.must("GET", client.Path("v5", "ibm", "backups", id), nil, nil)["backup"].(map[string]any); got["id"] != id {
		t.Fatalf("GET /v5/ibm/backups/{crn}: %s", dump(got))
	}
	guid := id[strings.LastIndex(id, ":")+1:]
	if got := b.admin.must("GET", client.Path("v5", "ibm", "backups", guid), nil, nil)["backup"].(map[string]any); got["id"] != id {
		t.Fatalf("GET /v5/ibm/backups/{guid}: %s", dump(got))
	}
	// The KMS saw block storage, not the deployment, wrap the backup's key.
	wrapped := false
	for _, ev := range b.admin.events("kms.secrets.wrap", "success") {
		if ev["initiator"].(map[string]any)["name"] == "is" && ev["target"].(map[string]any)["id"] == b.keyCRN {
			wrapped = true
		}
	}
	if !wrapped {
		t.Fatalf("no wrap by block storage (is) of the backup key in the audit trail")
	}

	dst := b.admin.createInstance("orders-restored", "messagehub", "standard", "us-south", map[string]any{"backup_id": id})
	if dst["state"] != "active" {
		t.Fatalf("restored deployment: %s", dump(dst))
	}
	adm2, _, consumer2 := kafkaAdmin(t, b.admin, dst)
	got := readAll(t, consumer2(), 300-17)
	if len(got) != len(want) {
		t.Fatalf("restored %d records, want %d", len(got), len(want))
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Fatalf("record %s: restored %q, want %q", k, g, w)
		}
	}
	starts, err := adm2.ListStartOffsets(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if o, _ := starts.Lookup("orders", 0); o.Offset != 17 {
		t.Fatalf("restored log-start offset of orders-0 is %d, want 17", o.Offset)
	}
	fetched, err := adm2.FetchOffsets(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	for p, at := range map[int32]int64{0: 40, 1: 55, 2: 100} {
		if o, ok := fetched.Lookup("orders", p); !ok || o.At != at {
			t.Fatalf("restored committed offset of billing on orders-%d: %+v, want %d", p, o, at)
		}
	}
	cfgs, err := adm2.DescribeTopicConfigs(ctx, "orders")
	if err != nil {
		t.Fatal(err)
	}
	if c, err := cfgs.On("orders", nil); err != nil || !strings.Contains(dump(c.Configs), "604800000") {
		t.Fatalf("restored topic config: %v %s", err, dump(c))
	}
	if topics, err := adm2.ListTopics(ctx); err != nil || !topics.Has("quiet") {
		t.Fatalf("the empty topic was not restored: %v", err)
	}
	return canary
}

// kafkaAdmin makes Manager credentials on a deployment and returns an
// admin and a producer for it, and a function making consumers.
func kafkaAdmin(t *testing.T, a *api, dep map[string]any) (*kadm.Client, *kgo.Client, func() *kgo.Client) {
	t.Helper()
	key := a.must("POST", "/v2/resource_keys", nil, map[string]any{"name": "creds-" + uuid.NewString()[:8], "source": dep["guid"], "role": "Manager"})
	creds := key["credentials"].(map[string]any)
	var brokers []string
	for _, b := range creds["kafka_brokers_sasl"].([]any) {
		brokers = append(brokers, b.(string))
	}
	newClient := func(opts ...kgo.Opt) *kgo.Client {
		cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(brokers...), kgo.SASL(plain.Auth{User: "token", Pass: creds["api_key"].(string)}.AsMechanism()),
			kgo.RetryTimeout(5 * time.Second)}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cl.Close)
		return cl
	}
	cl := newClient(kgo.RecordPartitioner(kgo.ManualPartitioner()))
	return kadm.NewClient(cl), cl, func() *kgo.Client {
		return newClient(kgo.ConsumeTopics("orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	}
}

// readAll consumes n records of "orders" and returns each as
// "topic/partition/offset" -> key, value, headers and timestamp.
func readAll(t *testing.T, cl *kgo.Client, n int) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	out := map[string]string{}
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(out), n, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s-%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			out[fmt.Sprintf("%s/%d/%d", r.Topic, r.Partition, r.Offset)] = fmt.Sprintf("%s|%s|%v|%d", r.Key, r.Value, r.Headers, r.Timestamp.UnixMilli())
		})
	}
	return out
}

// assertNoCanary fails if any file under dir holds the canary.
func assertNoCanary(t *testing.T, dir, canary string) {
	t.Helper()
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		files++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(data, []byte(canary)) {
			t.Errorf("%s holds record data in plain form", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files == 0 {
		t.Fatalf("no backup file under %s to scan", dir)
	}
}

func ptr[T any](v T) *T { return &v }
