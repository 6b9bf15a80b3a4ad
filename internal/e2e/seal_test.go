package e2e

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	_ "modernc.org/sqlite"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/server"
)

const sealPlaintext = "c2VjcmV0LWRhdGEta2V5LTAxMjM0NTY3ODlhYmNkZWY="

// shamirDir seals a fresh data directory with 5 shares, 3 to unseal.
func shamirDir(t *testing.T) (string, []string) {
	t.Helper()
	dir := t.TempDir()
	res, err := server.Init(context.Background(), server.Config{DataDir: dir, AdminAPIKey: adminKey, Logger: testLogger(t)}, 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Shares) != 5 || res.AdminAPIKey != adminKey {
		t.Fatalf("init gave %d shares and admin key %q", len(res.Shares), res.AdminAPIKey)
	}
	return dir, res.Shares
}

// unseal gives shares and checks the status after each.
func unseal(t *testing.T, c *client.Client, shares ...string) client.SealStatus {
	t.Helper()
	var st client.SealStatus
	for _, s := range shares {
		var err error
		if st, err = c.Unseal(context.Background(), s, false); err != nil {
			t.Fatalf("unseal: %v", err)
		}
	}
	return st
}

func TestShamirSealedDataDirectoryYieldsNothing(t *testing.T) {
	dir, shares := shamirDir(t)
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	var d streamsDeployment
	var kpGUID, keyID, wrapped string
	values := numbered("sealed", 0, 50)

	t.Run("first life", func(t *testing.T) {
		e := startIn(t, dir, clk)
		if st := unseal(t, e.admin, shares[4], shares[0], shares[2]); st.Sealed {
			t.Fatalf("still sealed after three shares: %+v", st)
		}
		a := e.as(e.admin)
		kpGUID = a.keyProtect("seal-kp")
		keyID, _ = a.createRootKey(kpGUID, "seal-root")
		out := a.must("POST", client.Path("api", "v2", "keys", keyID, "actions", "wrap"), kpHeader(kpGUID), map[string]any{"plaintext": sealPlaintext})
		wrapped = out["ciphertext"].(string)
		d = a.provisionDeployment(a.keyProtect("seal-kp2"), "seal-es")
		createTopic(t, d.manager, "sealed-topic", 2)
		produceValues(t, franz(t, d.writer), "sealed-topic", values)
	})

	// The data directory alone: no file holds the master key in any form,
	// and no 32-byte window of any file opens what the master key sealed.
	master := combineShares(t, shares[:3])
	keyCheck := readKeyCheck(t, dir)
	if _, err := openWith(master, keyCheck); err != nil {
		t.Fatalf("the rebuilt master key does not open the key check: %v", err)
	}
	forms := [][]byte{master, []byte(base64.StdEncoding.EncodeToString(master)), []byte(base64.RawURLEncoding.EncodeToString(master)), []byte(hex.EncodeToString(master))}
	windows := 0
	filepath.WalkDir(dir, func(path string, de fs.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range forms {
			if bytes.Contains(data, f) {
				t.Errorf("%s holds the master key", path)
			}
		}
		candidates := [][]byte{data}
		for _, field := range strings.Fields(string(data)) {
			if b, err := base64.StdEncoding.DecodeString(field); err == nil {
				candidates = append(candidates, b)
			}
		}
		for _, c := range candidates {
			for i := 0; i+seal.KeySize <= len(c); i++ {
				windows++
				if _, err := openWith(c[i:i+seal.KeySize], keyCheck); err == nil {
					t.Errorf("%s at %d holds a key that opens the sealed key material", path, i)
				}
			}
		}
		return nil
	})
	t.Logf("tried %d windows of the data directory as the master key", windows)

	t.Run("second life", func(t *testing.T) {
		e := startIn(t, dir, clk)
		st, err := e.admin.SealStatus(context.Background())
		if err != nil || !st.Sealed || st.T != 3 || st.N != 5 || st.Progress != 0 || st.Type != "shamir" {
			t.Fatalf("seal status after a start = %+v, %v", st, err)
		}
		assertSealed(t, e.url, d, kpGUID)

		// Two of three: still sealed, progress 2.
		if st := unseal(t, e.admin, shares[1], shares[3]); !st.Sealed || st.Progress != 2 {
			t.Fatalf("after two shares: %+v", st)
		}
		// A malformed share, and a well-formed share of another key.
		_, other := shamirDir(t)
		for _, bad := range []string{"not-a-share", shares[1][:len(shares[1])-6] + "AAAAAA", other[0]} {
			st, err := e.admin.Unseal(context.Background(), bad, false)
			var ce *client.Error
			if !asClientError(err, &ce) || ce.Status != http.StatusBadRequest || !strings.Contains(ce.Message, "share") {
				t.Fatalf("unseal with %q: %v, want a 400 that speaks of the share", bad, err)
			}
			if !st.Sealed || st.Progress != 2 {
				t.Fatalf("a bad share lost the progress: %+v", st)
			}
		}
		assertSealed(t, e.url, d, kpGUID)
		if st := unseal(t, e.admin, shares[2]); st.Sealed {
			t.Fatalf("still sealed after the third share: %+v", st)
		}

		a := e.as(e.admin)
		out := a.must("POST", client.Path("api", "v2", "keys", keyID, "actions", "unwrap"), kpHeader(kpGUID), map[string]any{"ciphertext": wrapped})
		if out["plaintext"] != sealPlaintext {
			t.Fatalf("unwrap after unseal = %v", out["plaintext"])
		}
		cl := franz(t, d.reader, kgo.ConsumeTopics("sealed-topic"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		var got []string
		for _, vs := range valuesOf(t, consumeRecords(t, cl, len(values))) {
			got = append(got, vs...)
		}
		if err := sameSet(got, values); err != nil {
			t.Fatal(err)
		}
	})
}

// assertSealed checks that every edge refuses, saying why.
func assertSealed(t *testing.T, url string, d streamsDeployment, kpGUID string) {
	t.Helper()
	get := func(path string, header map[string]string) (int, string) {
		req, _ := http.NewRequest("GET", url+path, nil)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := get("/api/v2/keys", map[string]string{"Authorization": "Bearer x", "bluemix-instance": kpGUID}); code != 503 ||
		!strings.Contains(body, "application/vnd.ibm.kms.error+json") || !strings.Contains(body, "sealed") {
		t.Errorf("Key Protect API while sealed: %d %s", code, body)
	}
	if code, body := get("/v2/resource_instances", nil); code != 503 || !strings.Contains(body, "sealed") {
		t.Errorf("resource controller while sealed: %d %s", code, body)
	}
	if code, body := get("/console/", nil); code != 503 || !strings.Contains(body, "Keyline is sealed") || !strings.Contains(body, "keyline operator unseal") {
		t.Errorf("console while sealed: %d %s", code, body)
	}
	cl := franz(t, d.writer, kgo.RetryTimeout(time.Second))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := cl.Request(ctx, kmsg.NewPtrMetadataRequest())
	if err == nil || !strings.Contains(err.Error(), "sealed") {
		t.Errorf("Kafka produce while sealed: %v, want a refusal that says sealed", err)
	}
}

func asClientError(err error, ce **client.Error) bool {
	e, ok := err.(*client.Error)
	*ce = e
	return ok
}

func combineShares(t *testing.T, texts []string) []byte {
	t.Helper()
	var shares []seal.Share
	for _, s := range texts {
		sh, err := seal.ParseShare(s)
		if err != nil {
			t.Fatal(err)
		}
		shares = append(shares, sh)
	}
	key, err := seal.Combine(shares)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func readKeyCheck(t *testing.T, dir string) []byte {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "keyline.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var check []byte
	if err := db.QueryRow(`SELECT key_check FROM seal_config`).Scan(&check); err != nil {
		t.Fatal(err)
	}
	return check
}

// openWith is seal.Open without building a seal.AEAD per window.
func openWith(key, sealed []byte) ([]byte, error) {
	block, _ := aes.NewCipher(key)
	gcm, _ := cipher.NewGCM(block)
	return gcm.Open(nil, sealed[:12], sealed[12:], []byte("keyline/seal/key-check"))
}

// operator seal is an emergency brake: under a wrap load and a producing
// client, every Kafka connection is closed by the time the call returns,
// the APIs answer 503, and the seal is audited.
func TestOperatorSealClosesConnectionsAndIsAudited(t *testing.T) {
	dir, shares := shamirDir(t)
	e := startIn(t, dir, clock.NewFake(time.Now().UTC().Truncate(time.Second)))
	unseal(t, e.admin, shares[:3]...)
	a := e.as(e.admin)
	d := a.provisionDeployment(a.keyProtect("brake-kp"), "brake-es")
	kpGUID := a.keyProtect("brake-kp2")
	keyID, _ := a.createRootKey(kpGUID, "brake-root")
	createTopic(t, d.manager, "brake", 1)
	before := numbered("before", 0, 20)
	produceValues(t, franz(t, d.writer), "brake", before)

	// A Kafka connection in use, a producer, and wrap callers.
	conn, err := net.Dial("tcp", d.writer.Brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Records in flight when the server seals would be retried for ever:
	// bound their delivery so the load stops when the test says so.
	producer := franz(t, d.writer, kgo.RecordDeliveryTimeout(3*time.Second), kgo.RecordRetries(3))
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			producer.ProduceSync(ctx, &kgo.Record{Topic: "brake", Value: fmt.Appendf(nil, "load-%d", i)})
			cancel()
		}
	}()
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				a.do("POST", client.Path("api", "v2", "keys", keyID, "actions", "wrap"), kpHeader(kpGUID), map[string]any{"plaintext": sealPlaintext}, nil)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond) // let the load run

	began := time.Now()
	st, err := e.admin.Seal(context.Background())
	took := time.Since(began)
	if err != nil || !st.Sealed {
		t.Fatalf("seal = %+v, %v", st, err)
	}
	// Closed by the time the call returned: the read ends at once with
	// EOF or a reset, not at its (generous) deadline.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the Kafka connection is still open after the seal: %v", err)
	}
	t.Logf("operator seal under load returned after %v", took)
	close(stop)
	producer.Close() // fails what is still buffered
	wg.Wait()
	assertSealed(t, e.url, d, kpGUID)

	// Unsealed again, everything is back, and the seal was audited.
	unseal(t, e.admin, shares[1:4]...)
	q := url.Values{"action": {"keyline.sys.seal"}}
	events := a.must("GET", "/v1/audit/events?"+q.Encode(), nil, nil)["events"].([]any)
	if len(events) != 1 {
		t.Fatalf("%d audit events of the seal, want 1", len(events))
	}
	if ev := events[0].(map[string]any); ev["outcome"] != "success" {
		t.Errorf("seal event: %v", ev)
	}
	cl := franz(t, d.reader, kgo.ConsumeTopics("brake"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := valuesOf(t, consumeRecords(t, cl, len(before)))[0]
	if err := sameSet(got[:len(before)], before); err != nil {
		t.Fatal(err)
	}

	// A dev server cannot be sealed (its key is a file beside the data).
	dev := start(t)
	if _, err := dev.admin.Seal(context.Background()); err == nil || !strings.Contains(err.Error(), "dev") {
		t.Fatalf("seal of a dev server: %v", err)
	}
}
