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

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/client"
)

// TestCompactedTopicIsCleanedAndHoldsNoPlaintext produces many values for
// a few keys, each carrying a random marker, to a compacted topic of a
// deployment under `keyline serve`; waits for the deployment's background
// cleaner to compact it; checks consumers read each key's newest value;
// then scans the data directory for the marker, as the canary test does.
func TestCompactedTopicIsCleanedAndHoldsNoPlaintext(t *testing.T) {
	marker := "cmpc" + randomHex(10)
	dir := t.TempDir()
	p := serveProcess(t, dir)
	admin := &api{t: t, c: client.New(p.url, adminKey)}
	dep := admin.provisionDeployment(admin.keyProtect("compact-kp"), "compact")

	const topic = "compacted"
	r, err := kadm.NewClient(franz(t, dep.manager)).CreateTopic(testCtx(t), 1, 1, map[string]*string{
		"cleanup.policy": ptr("compact"), "segment.bytes": ptr("1048576"), "min.cleanable.dirty.ratio": ptr("0.1")}, topic)
	if err == nil {
		err = r.Err
	}
	if err != nil {
		t.Fatal(err)
	}
	prod := franz(t, dep.writer, kgo.ProducerBatchCompression(kgo.NoCompression()))
	const n, keys = 4000, 8 // about 4 MiB: several sealed segments
	pad := strings.Repeat("p", 1000)
	newest := map[string]string{}
	for i := range n {
		k, v := fmt.Sprintf("key-%s-%d", marker, i%keys), fmt.Sprintf("value-%s-%d-%s", marker, i, pad)
		newest[k] = v
		prod.Produce(testCtx(t), &kgo.Record{Topic: topic, Key: []byte(k), Value: []byte(v)}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
	}
	if err := prod.Flush(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	prod.Close()

	// The cleaner runs every 15 s; wait until a read from the start finds
	// fewer records than were produced.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var got map[string]string
	for count := n; count == n; {
		if ctx.Err() != nil {
			t.Fatal("the background cleaner did not compact the topic")
		}
		time.Sleep(time.Second)
		count, got = readFromStart(ctx, t, dep.reader, topic, n-1)
	}
	for k, v := range newest {
		if got[k] != v {
			t.Fatalf("key %s reads %.40q after compaction, want its newest value %.40q", k, got[k], v)
		}
	}
	p.kill()

	needles := encodings(marker)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if enc, at := find(b, needles); at >= 0 {
			t.Errorf("%s holds the marker (%s) at byte %d", strings.TrimPrefix(path, dir), enc, at)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if enc, at := find([]byte(p.logs()), needles); at >= 0 {
		t.Errorf("the server's log output holds the marker (%s) at byte %d", enc, at)
	}
}

// readFromStart consumes topic from its start up to offset last and
// returns how many records it read and each key's last value.
func readFromStart(ctx context.Context, t *testing.T, creds kafkaCreds, topic string, last int64) (int, map[string]string) {
	t.Helper()
	cl := franz(t, creds, kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	values := map[string]string{}
	count := 0
	for seen := int64(-1); seen < last; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read up to %d of %d: %v", seen, last, ctx.Err())
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		for _, r := range fs.Records() {
			if !bytes.Contains(r.Value, []byte("value-")) {
				t.Fatalf("record at %d: %.40q", r.Offset, r.Value)
			}
			values[string(r.Key)] = string(r.Value)
			count++
			seen = max(seen, r.Offset)
		}
	}
	return count, values
}
