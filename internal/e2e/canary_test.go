package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/client"
)

// TestCanaryNeverReachesDisk produces records whose keys, values, headers,
// topic and consumer group carry a random marker through `keyline serve`,
// then scans every file under the data directory (segments, indexes,
// metadata journal, the SQLite database with its WAL and shm) and the
// server's own log output for the marker, raw, in base64 and in hex.
func TestCanaryNeverReachesDisk(t *testing.T) {
	marker := "cnry" + randomHex(10)
	dir := t.TempDir()
	p := serveProcess(t, dir)
	admin := &api{t: t, c: client.New(p.url, adminKey)}
	dep := admin.provisionDeployment(admin.keyProtect("canary-kp"), "canary")

	topic := "topic-" + marker
	createTopic(t, dep.manager, topic, 2)
	// A topic made and dropped through the admin REST API, whose name is in
	// the request path.
	restTopic := "rest-" + marker
	if code := adminREST(t, dep.manager, "POST", "/admin/topics", map[string]any{"name": restTopic, "partitions": 1}, nil); code >= 300 {
		t.Fatalf("POST /admin/topics: %d", code)
	}
	if code := adminREST(t, dep.manager, "DELETE", "/admin/topics/"+restTopic, nil, nil); code >= 300 {
		t.Fatalf("DELETE /admin/topics: %d", code)
	}
	// Uncompressed, so that a plain copy anywhere would show the marker.
	prod := franz(t, dep.writer, kgo.ProducerBatchCompression(kgo.NoCompression()))
	const n = 500
	ctx := testCtx(t)
	for i := range n {
		r := &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "key-%s-%d", marker, i), Value: fmt.Appendf(nil, "value-%s-%d", marker, i),
			Headers: []kgo.RecordHeader{{Key: "hdr-" + marker, Value: []byte("hval-" + marker)}}}
		prod.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
	}
	// Two records of 600 KiB: batches the log seals in chunks and writes
	// piece by piece while sealing.
	const big = 2
	for range big {
		v := bytes.Repeat([]byte("big-"+marker+"-"), (600<<10)/len("big-"+marker+"-"))
		prod.Produce(ctx, &kgo.Record{Topic: topic, Value: v}, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce: %v", err)
			}
		})
		if err := prod.Flush(ctx); err != nil {
			t.Fatal(err)
		}
	}
	group := "group-" + marker
	cons := franz(t, dep.reader, kgo.ConsumerGroup(group), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit())
	got := consumeRecords(t, cons, n+big)
	if !bytes.Contains(got[0].Value, []byte(marker)) || len(got[0].Headers) != 1 {
		t.Fatalf("the records do not come back as produced: %q", got[0].Value)
	}
	if err := cons.CommitUncommittedOffsets(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	cons.Close()
	prod.Close()
	p.kill() // no shutdown code tidies anything up before the scan

	needles := encodings(marker)
	scanned, segments := 0, 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		scanned++
		if strings.HasSuffix(path, ".log") && len(b) > n*40 {
			segments++
		}
		if enc, at := find(b, needles); at >= 0 {
			t.Errorf("%s holds the marker (%s) at byte %d", strings.TrimPrefix(path, dir), enc, at)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"keyline.db", "keyline.db-wal", "keyline.db-shm"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("the scan missed %s: %v", name, err)
		}
	}
	if segments == 0 {
		t.Fatalf("no segment large enough to hold the records was scanned (%d files): the scan proves nothing", scanned)
	}
	logs := p.logs()
	if enc, at := find([]byte(logs), needles); at >= 0 {
		t.Errorf("the server's log output holds the marker (%s) at byte %d: %s", enc, at, logs)
	}
	if len(logs) == 0 {
		t.Error("no server log output was captured")
	}
	t.Logf("scanned %d files and %d bytes of server logs for %d encodings of the marker", scanned, len(logs), len(needles))
}

// TestCanaryScanFindsEveryEncoding shows the scan would see the marker in
// each form it looks for.
func TestCanaryScanFindsEveryEncoding(t *testing.T) {
	marker := "cnry" + randomHex(10)
	for _, form := range []string{
		"prefix " + marker + " suffix",
		base64.StdEncoding.EncodeToString([]byte("x" + marker + "y")),
		base64.RawURLEncoding.EncodeToString([]byte("xy" + marker)),
		hex.EncodeToString([]byte("{" + marker + "}")),
		strings.ToUpper(hex.EncodeToString([]byte(marker))),
	} {
		if _, at := find([]byte("some data "+form+" more data"), encodings(marker)); at < 0 {
			t.Errorf("the scan misses %q", form)
		}
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// encodings are the byte strings that give the marker away: itself, its
// hex (both cases) and its base64 (standard and URL alphabets) at each of
// the three alignments it can have inside a longer encoded string.
func encodings(marker string) map[string][]byte {
	out := map[string][]byte{
		"raw":       []byte(marker),
		"hex":       []byte(hex.EncodeToString([]byte(marker))),
		"HEX":       []byte(strings.ToUpper(hex.EncodeToString([]byte(marker)))),
		"raw-upper": []byte(strings.ToUpper(marker)),
	}
	for shift := range 3 {
		src := append(bytes.Repeat([]byte{0}, shift), marker...)
		for name, enc := range map[string]*base64.Encoding{"base64": base64.StdEncoding, "base64url": base64.URLEncoding} {
			s := enc.EncodeToString(src)
			// Drop the characters that mix in the neighbours' bits.
			lead := (shift*8 + 5) / 6
			s = strings.TrimRight(s, "=")
			s = s[lead : len(s)-2]
			out[fmt.Sprintf("%s+%d", name, shift)] = []byte(s)
		}
	}
	return out
}

// find returns the first needle found in b and where.
func find(b []byte, needles map[string][]byte) (string, int) {
	for name, n := range needles {
		if i := bytes.Index(b, n); i >= 0 {
			return name, i
		}
	}
	return "", -1
}
