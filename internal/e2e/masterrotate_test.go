package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/console"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/server"
	"github.com/keyline/keyline/internal/store/storetest"
)

// sealedData is what a rotation must keep readable: ciphertexts wrapped
// by several root keys, and records of a deployment encrypted by a root
// key and of one whose DEK only the master key seals.
type sealedData struct {
	kpGUID   string
	wrapped  map[string]string // ciphertext -> key id
	keyed    streamsDeployment
	keyless  streamsDeployment
	produced map[string][]string // topic -> values, per deployment
	backupID string              // a backup of keyless
}

func makeSealedData(t *testing.T, a *api, keys, wraps int) *sealedData {
	t.Helper()
	d := &sealedData{kpGUID: a.keyProtect("rot-kp"), wrapped: map[string]string{}, produced: map[string][]string{}}
	for i := 0; i < keys; i++ {
		id, _ := a.createRootKey(d.kpGUID, fmt.Sprintf("rot-root-%d", i))
		for j := 0; j < wraps; j++ {
			out := a.must("POST", client.Path("api", "v2", "keys", id, "actions", "wrap"), kpHeader(d.kpGUID), map[string]any{"plaintext": sealPlaintext})
			d.wrapped[out["ciphertext"].(string)] = id
		}
	}
	// A console session: its bearer token is sealed under the master key.
	consoleSignIn(t, a.c.BaseURL, a.c.APIKey)
	d.keyed = a.provisionDeployment(a.keyProtect("rot-kp2"), "rot-es")
	d.keyless = a.provisionKeyless("rot-es-nokey")
	for _, dep := range []streamsDeployment{d.keyed, d.keyless} {
		createTopic(t, dep.manager, "rot", 2)
		vals := numbered("before-"+dep.guid[:8], 0, 30)
		produceValues(t, franz(t, dep.writer), "rot", vals)
		d.produced[dep.guid] = vals
	}
	// A backup of the keyless deployment: the master key wraps its DEK in
	// the archive header on the backup volume.
	if task := a.backup(d.keyless.crn); task["status"] != "completed" {
		t.Fatalf("backup of the keyless deployment: %s", dump(task))
	}
	d.backupID = a.backups(d.keyless.crn)[0]["id"].(string)
	return d
}

// provisionKeyless is a deployment without a disk key: its DEK is sealed
// by the master key.
func (a *api) provisionKeyless(name string) streamsDeployment {
	a.t.Helper()
	inst := a.createInstance(name, "messagehub", "standard", "us-south", nil)
	if inst["state"] != "active" {
		a.t.Fatalf("deployment %s is %v: %s", name, inst["state"], dump(inst))
	}
	d := streamsDeployment{guid: inst["guid"].(string), crn: inst["crn"].(string)}
	d.manager = a.credentials(d.guid, name+"-manager", "Manager")
	d.writer = a.credentials(d.guid, name+"-writer", "Writer")
	d.reader = a.credentials(d.guid, name+"-reader", "Reader")
	return d
}

// checkReadable unwraps every ciphertext and reads every record back.
func (d *sealedData) checkReadable(t *testing.T, a *api) {
	t.Helper()
	for ct, id := range d.wrapped {
		out := a.must("POST", client.Path("api", "v2", "keys", id, "actions", "unwrap"), kpHeader(d.kpGUID), map[string]any{"ciphertext": ct})
		if out["plaintext"] != sealPlaintext {
			t.Fatalf("unwrap of a ciphertext of %s = %v", id, out["plaintext"])
		}
	}
	for _, dep := range []streamsDeployment{d.keyed, d.keyless} {
		want := d.produced[dep.guid]
		cl := franz(t, dep.reader, kgo.ConsumeTopics("rot"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		var got []string
		for _, vs := range valuesOf(t, consumeRecords(t, cl, len(want))) {
			got = append(got, vs...)
		}
		if err := sameSet(got, want); err != nil {
			t.Fatalf("deployment %s: %v", dep.guid, err)
		}
	}
}

func openDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "keyline.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// masterKeyring opens the stored keyring with the unseal key the shares
// rebuild: what an operator holding the shares can see.
func masterKeyring(t *testing.T, dir string, shares []string) *seal.Keyring {
	t.Helper()
	var blob []byte
	if err := openDB(t, dir).QueryRow(`SELECT keyring FROM seal_config`).Scan(&blob); err != nil {
		t.Fatal(err)
	}
	unsealKey, err := seal.New(combineShares(t, shares))
	if err != nil {
		t.Fatal(err)
	}
	ring, err := seal.OpenKeyring(unsealKey, blob)
	if err != nil {
		t.Fatalf("the shares do not open the stored keyring: %v", err)
	}
	return ring
}

// assertOpensNothing tries old on every value sealed under a master key in
// the database, and on the seal's own rows; it returns how many it tried.
func assertOpensNothing(t *testing.T, dir string, data *sealedData, old *seal.Keyring) int {
	t.Helper()
	db := openDB(t, dir)
	tried := map[string]int{}
	for _, c := range server.MasterSealedColumns() {
		err := server.ScanSealed(db, c, "", 0, func(v server.SealedValue) error {
			tried[c.Table+"."+c.Column]++
			if old.OpensAny(v.Sealed, v.AAD) {
				t.Errorf("the old master key still opens %s.%s of %s", c.Table, c.Column, v.Key)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// The backups' headers on the volume.
	files, _ := filepath.Glob(filepath.Join(dir, "backups", "deployments", data.keyless.guid, "*.klbackup"))
	for _, f := range files {
		obj, err := os.Open(f)
		if err != nil {
			t.Fatal(err)
		}
		h, err := archive.ReadHeader(obj)
		obj.Close()
		if err != nil {
			t.Fatal(err)
		}
		tried["backup headers"]++
		if old.OpensAny(h.WrappedDEK.Ciphertext, []byte("keyline/backup-dek\x00"+data.keyless.crn+"\x00"+h.BackupID)) {
			t.Errorf("the old master key still opens the data key of backup %s", f)
		}
	}
	// Console sessions sealed by the old key end with the rotation.
	rows, err := db.Query(`SELECT id_hash, sealed FROM console_sessions`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var hash, sealed []byte
		if err := rows.Scan(&hash, &sealed); err != nil {
			t.Fatal(err)
		}
		tried["console_sessions.sealed"]++
		if old.OpensAny(sealed, console.SessionAAD(hash)) {
			t.Errorf("the old master key still opens a console session")
		}
	}
	rows.Close()
	var check, ring []byte
	if err := db.QueryRow(`SELECT key_check, keyring FROM seal_config`).Scan(&check, &ring); err != nil {
		t.Fatal(err)
	}
	if old.OpensAny(check, []byte("keyline/seal/key-check")) || old.OpensAny(ring, seal.KeyringAAD) {
		t.Error("the old master key opens the seal's own rows")
	}
	for _, col := range []string{"kms_key_versions.material", "iam_signing_keys.sealed", "rc_resource_keys.sealed_credentials", "streams_deployments.wrapped_dek", "backup headers"} {
		if tried[col] == 0 {
			t.Errorf("no value of %s was tried: the test data lacks it", col)
		}
	}
	n := 0
	for _, v := range tried {
		n += v
	}
	return n
}

// Rotation under a running wrap load and a producing client: zero failed
// calls, everything readable after, the old master key opens nothing.
func TestMasterKeyRotationUnderLoad(t *testing.T) {
	dir, shares := shamirDir(t)
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	var data *sealedData
	t.Run("rotate under load", func(t *testing.T) { data = rotateUnderLoad(t, dir, shares, clk) })
	if t.Failed() {
		return
	}
	// After a restart the new master key alone opens everything.
	e := startIn(t, dir, clk)
	unseal(t, e.admin, shares[2:5]...)
	data.checkReadable(t, e.as(e.admin))
}

func rotateUnderLoad(t *testing.T, dir string, shares []string, clk *clock.Fake) *sealedData {
	e := startIn(t, dir, clk)
	unseal(t, e.admin, shares[:3]...)
	a := e.as(e.admin)
	data := makeSealedData(t, a, 20, 2)
	old := masterKeyring(t, dir, shares[:3])
	if v := old.Versions(); len(v) != 1 || v[0] != seal.LegacyVersion {
		t.Fatalf("a new data directory's keyring holds versions %v", v)
	}

	// The load: wrap and unwrap callers, and a producer on each deployment.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var calls, failed atomic.Int64
	var failMu sync.Mutex
	var failures []string
	fail := func(what string, err error) {
		failed.Add(1)
		failMu.Lock()
		if len(failures) < 5 {
			failures = append(failures, fmt.Sprintf("%s: %v", what, err))
		}
		failMu.Unlock()
	}
	var keyID string
	for _, id := range data.wrapped {
		keyID = id
		break
	}
	for w := 0; w < 4; w++ {
		untilStopped(&wg, stop, func(int) {
			var out map[string]any
			calls.Add(1)
			if err := a.do("POST", client.Path("api", "v2", "keys", keyID, "actions", "wrap"), kpHeader(data.kpGUID), map[string]any{"plaintext": sealPlaintext}, &out); err != nil {
				fail("wrap", err)
				return
			}
			var back map[string]any
			calls.Add(1)
			if err := a.do("POST", client.Path("api", "v2", "keys", keyID, "actions", "unwrap"), kpHeader(data.kpGUID), map[string]any{"ciphertext": out["ciphertext"]}, &back); err != nil || back["plaintext"] != sealPlaintext {
				fail("unwrap", fmt.Errorf("%v (plaintext %v)", err, back["plaintext"]))
			}
		})
	}
	// New keys during the rotation: their material is sealed while the
	// walk goes on.
	var wrappedMu sync.Mutex
	untilStopped(&wg, stop, func(i int) {
		var key map[string]any
		calls.Add(1)
		body := map[string]any{"metadata": map[string]any{"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
			"resources": []any{map[string]any{"type": "application/vnd.ibm.kms.key+json", "name": fmt.Sprintf("during-%d", i), "extractable": false}}}
		if err := a.do("POST", "/api/v2/keys", kpHeader(data.kpGUID), body, &key); err != nil {
			fail("create key", err)
			return
		}
		id := key["resources"].([]any)[0].(map[string]any)["id"].(string)
		var out map[string]any
		calls.Add(1)
		if err := a.do("POST", client.Path("api", "v2", "keys", id, "actions", "wrap"), kpHeader(data.kpGUID), map[string]any{"plaintext": sealPlaintext}, &out); err != nil {
			fail("wrap with a new key", err)
			return
		}
		wrappedMu.Lock()
		data.wrapped[out["ciphertext"].(string)] = id
		wrappedMu.Unlock()
	})
	var produceMu sync.Mutex
	for _, dep := range []streamsDeployment{data.keyed, data.keyless} {
		producer := franz(t, dep.writer)
		untilStopped(&wg, stop, func(i int) {
			v := fmt.Sprintf("during-%s-%05d", dep.guid[:8], i)
			calls.Add(1)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := producer.ProduceSync(ctx, &kgo.Record{Topic: "rot", Value: []byte(v)}).FirstErr()
			cancel()
			if err != nil {
				fail("produce", err)
				return
			}
			produceMu.Lock()
			data.produced[dep.guid] = append(data.produced[dep.guid], v)
			produceMu.Unlock()
		})
	}
	waitFor(t, 2*time.Minute, "the load to run", func() bool { return calls.Load() > 50 })

	cli := newCLI(t, e.url)
	cli.env = []string{"KEYLINE_APIKEY=" + adminKey}
	binary(t) // built before the clock starts
	began := time.Now()
	out, errOut, code := cli.run("operator", "rotate-master-key")
	took := time.Since(began)
	if code != 0 {
		t.Fatalf("rotate-master-key: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "completed") || !strings.Contains(errOut, "100%") {
		t.Fatalf("rotate-master-key did not wait for the end with a progress bar:\n%s\n%s", out, errOut)
	}
	during := calls.Load()
	waitFor(t, 2*time.Minute, "the load to go on", func() bool { return calls.Load() > during+50 }) // the load goes on after
	close(stop)
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d calls failed during the rotation: %v", n, calls.Load(), failures)
	}

	st, err := e.admin.MasterKeyRotation(context.Background())
	if err != nil || st.State != "completed" || st.ToVersion != 2 || len(st.KeyVersions) != 1 || st.KeyVersions[0] != 2 || st.Done < st.Total {
		t.Fatalf("rotation status after = %+v, %v", st, err)
	}
	data.checkReadable(t, a)
	// The backup whose data key the master key wraps restores.
	if dst := a.must("POST", "/v2/resource_instances", nil, restoreBody("rot-restored", data.backupID)); dst["state"] != "active" {
		t.Fatalf("the master-sealed backup does not restore after the rotation: %s", dump(dst))
	}
	tried := assertOpensNothing(t, dir, data, old)
	if v := masterKeyring(t, dir, shares[1:4]).Versions(); len(v) != 1 || v[0] != 2 {
		t.Fatalf("the stored keyring holds versions %v after the rotation, want [2]", v)
	}
	t.Logf("rotated %d sealed values in %v (CLI included) under %d calls, none failed; the old key opens none of %d values",
		st.Total, took.Round(time.Millisecond), calls.Load(), tried)

	events := a.must("GET", "/v1/audit/events?"+url.Values{"action": {"keyline.sys.rotate-master-key"}}.Encode(), nil, nil)["events"].([]any)
	if len(events) != 1 {
		t.Fatalf("%d audit events of the rotation, want 1", len(events))
	}
	return data
}

// A server stopped mid-rotation resumes it after the next unseal, from the
// recorded cursor.
func TestMasterKeyRotationResumesAfterRestart(t *testing.T) {
	dir, shares := shamirDir(t)
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	var data *sealedData
	var old *seal.Keyring
	var paused int64
	t.Run("first life", func(t *testing.T) {
		reached := make(chan int64, 1)
		e := startIn(t, dir, clk, func(c *server.Config) {
			c.MasterRotationBatch = 4
			c.MasterRotationHook = func(ctx context.Context, done int64) {
				if done >= 12 {
					select {
					case reached <- done:
					default:
					}
					<-ctx.Done() // until the server stops
				}
			}
		})
		unseal(t, e.admin, shares[:3]...)
		a := e.as(e.admin)
		data = makeSealedData(t, a, 10, 1)
		old = masterKeyring(t, dir, shares[:3])
		if _, err := e.admin.RotateMasterKey(context.Background()); err != nil {
			t.Fatal(err)
		}
		select {
		case paused = <-reached:
		case <-time.After(2 * time.Minute):
			t.Fatal("the rotation did not reach 12 values")
		}
		st, err := e.admin.MasterKeyRotation(context.Background())
		if err != nil || st.State != "running" || st.Done != paused || st.Total <= paused {
			t.Fatalf("status mid-rotation = %+v, %v (paused at %d)", st, err, paused)
		}
		// Both keys are in use meanwhile.
		data.checkReadable(t, a)
	})
	t.Run("second life", func(t *testing.T) {
		e := startIn(t, dir, clk)
		var state string
		var done int64
		if err := openDB(t, dir).QueryRow(`SELECT state, done FROM seal_rotation`).Scan(&state, &done); err != nil || state != "running" || done != paused {
			t.Fatalf("recorded rotation = %s at %d, %v; want running at %d", state, done, err, paused)
		}
		unseal(t, e.admin, shares[1:4]...)
		var st client.RotationStatus
		waitFor(t, 2*time.Minute, "the resumed rotation", func() bool {
			var err error
			st, err = e.admin.MasterKeyRotation(context.Background())
			return err == nil && st.State != "running"
		})
		if st.State != "completed" || len(st.KeyVersions) != 1 || st.KeyVersions[0] != 2 {
			t.Fatalf("resumed rotation ended %+v", st)
		}
		data.checkReadable(t, e.as(e.admin))
		assertOpensNothing(t, dir, data, old)
	})
}

// rekey replaces the shares: the old ones no longer unseal, the new ones
// do, the data stays.
func TestRekeyReplacesShares(t *testing.T) {
	dir, shares := shamirDir(t)
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	var newShares []string
	var data *sealedData
	t.Run("rekey", func(t *testing.T) {
		e := startIn(t, dir, clk)
		unseal(t, e.admin, shares[:3]...)
		a := e.as(e.admin)
		data = makeSealedData(t, a, 2, 2)

		// Too few, or wrong, shares are refused and change nothing.
		_, other := shamirDir(t)
		for _, given := range [][]string{shares[:2], {shares[0], shares[1], other[2]}} {
			if _, err := e.admin.Rekey(context.Background(), given, 3, 2); err == nil || !strings.Contains(err.Error(), "shares") {
				t.Fatalf("rekey with %d shares of which some wrong: %v", len(given), err)
			}
		}
		out := rekeyCLI(t, e.url, strings.Join(shares[2:5], "\n")+"\n", "--key-shares", "3", "--key-threshold", "2")
		var res struct {
			Keys []string `json:"unseal_keys_b64"`
		}
		if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Keys) != 3 {
			t.Fatalf("rekey printed %q: %v", out, err)
		}
		newShares = res.Keys
		st, err := e.admin.SealStatus(context.Background())
		if err != nil || st.T != 2 || st.N != 3 {
			t.Fatalf("seal status after rekey = %+v, %v", st, err)
		}
		events := a.must("GET", "/v1/audit/events?"+url.Values{"action": {"keyline.sys.rekey"}}.Encode(), nil, nil)["events"].([]any)
		outcomes := map[string]int{}
		for _, ev := range events {
			outcomes[ev.(map[string]any)["outcome"].(string)]++
		}
		if outcomes["success"] != 1 || outcomes["failure"] != 2 {
			t.Fatalf("rekey audit outcomes = %v, want 1 success and 2 failures", outcomes)
		}
		// operator init, run with no server, is in the Activity Tracker too.
		inits := a.must("GET", "/v1/audit/events?"+url.Values{"action": {"keyline.sys.init"}}.Encode(), nil, nil)["events"].([]any)
		if len(inits) != 1 || inits[0].(map[string]any)["initiator"].(map[string]any)["id"] != "keyline-operator" {
			t.Fatalf("operator init audit events: %v", inits)
		}
	})
	t.Run("after", func(t *testing.T) {
		e := startIn(t, dir, clk)
		// The old shares: the threshold is 2 now, and they rebuild nothing.
		if _, err := e.admin.Unseal(context.Background(), shares[0], false); err != nil {
			t.Fatal(err)
		}
		st, err := e.admin.Unseal(context.Background(), shares[1], false)
		if err == nil || !st.Sealed {
			t.Fatalf("old shares unsealed after rekey: %+v, %v", st, err)
		}
		e.admin.Unseal(context.Background(), "", true)
		if st := unseal(t, e.admin, newShares[2], newShares[0]); st.Sealed {
			t.Fatalf("new shares do not unseal: %+v", st)
		}
		data.checkReadable(t, e.as(e.admin))
	})
}

func rekeyCLI(t *testing.T, url, stdin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary(t), append([]string{"operator", "rekey", "--output", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "KEYLINE_HOME="+t.TempDir(), "KEYLINE_ENDPOINT="+url, "KEYLINE_APIKEY="+adminKey)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("keyline operator rekey: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	return stdout.String()
}

// A data directory sealed before the keyring form (its shares are the
// master key itself) still unseals; rotation asks for a rekey first; after
// rekey and rotation its old master key opens nothing.
func TestLegacyShamirDirectoryMovesToKeyring(t *testing.T) {
	dir := t.TempDir()
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	var data *sealedData
	t.Run("dev life", func(t *testing.T) {
		e := startIn(t, dir, clk)
		data = makeSealedData(t, e.as(e.admin), 2, 1)
		// A dev key is a file: neither rotated nor rekeyed.
		if _, err := e.admin.RotateMasterKey(context.Background()); err == nil || !strings.Contains(err.Error(), "dev") {
			t.Fatalf("rotation of a dev server: %v", err)
		}
		if _, err := e.admin.Rekey(context.Background(), []string{"a", "b"}, 3, 2); err == nil || !strings.Contains(err.Error(), "dev") {
			t.Fatalf("rekey of a dev server: %v", err)
		}
	})
	// What `operator init` wrote before keyrings: shares of the master key
	// and the key check sealed by it, no keyring.
	master, err := seal.ReadMasterKey(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	split, err := seal.Split(master, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	var shares []string
	for _, s := range split {
		shares = append(shares, s.String())
	}
	m, _ := seal.New(master)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "keyline.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE seal_config SET mode = 'shamir', shares = 3, threshold = 2, key_check = ?, keyring = NULL`,
		m.Seal([]byte("keyline master key check v1"), []byte("keyline/seal/key-check"))); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if err := os.Remove(filepath.Join(dir, "master.key")); err != nil {
		t.Fatal(err)
	}
	old, _ := seal.NewKeyring(seal.LegacyVersion, master)

	e := startIn(t, dir, clk)
	unseal(t, e.admin, shares[0], shares[2])
	a := e.as(e.admin)
	data.checkReadable(t, a)
	if _, err := e.admin.RotateMasterKey(context.Background()); err == nil || !strings.Contains(err.Error(), "rekey") {
		t.Fatalf("rotation of a legacy directory: %v, want a refusal that says rekey", err)
	}
	newShares, err := e.admin.Rekey(context.Background(), shares[1:], 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.admin.RotateMasterKey(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 2*time.Minute, "the rotation", func() bool {
		st, err := e.admin.MasterKeyRotation(context.Background())
		return err == nil && st.State == "completed"
	})
	data.checkReadable(t, a)
	assertOpensNothing(t, dir, data, old)
	if v := masterKeyring(t, dir, newShares[:2]).Versions(); len(v) != 1 || v[0] != 2 {
		t.Fatalf("keyring versions %v, want [2]", v)
	}
}

// untilStopped calls fn(0), fn(1)... in a goroutine until stop closes.
func untilStopped(wg *sync.WaitGroup, stop <-chan struct{}, fn func(i int)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			fn(i)
		}
	}()
}

// The keyring, the rotation's cursor and the re-sealed values in
// PostgreSQL: a rotation in small batches completes, and after a restart
// the shares open the new keyring and every key unwraps.
func TestMasterKeyRotationOnPostgreSQL(t *testing.T) {
	databaseURL := storetest.URL(t)
	if databaseURL == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set")
	}
	dir := t.TempDir()
	res, err := server.Init(context.Background(), server.Config{DataDir: dir, DatabaseURL: databaseURL, AdminAPIKey: adminKey, Logger: testLogger(t)}, 3, 2)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	onPostgres := func(c *server.Config) { c.DatabaseURL, c.MasterRotationBatch = databaseURL, 3 }
	wrapped := map[string]string{}
	var guid string
	t.Run("rotate", func(t *testing.T) {
		e := startIn(t, dir, clk, onPostgres)
		unseal(t, e.admin, res.Shares[:2]...)
		a := e.as(e.admin)
		guid = a.createInstance("pg-rot-kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
		for i := 0; i < 10; i++ {
			id, _ := a.createRootKey(guid, fmt.Sprintf("pg-rot-%d", i))
			out := a.must("POST", client.Path("api", "v2", "keys", id, "actions", "wrap"), kpHeader(guid), map[string]any{"plaintext": sealPlaintext})
			wrapped[out["ciphertext"].(string)] = id
		}
		if _, err := e.admin.RotateMasterKey(context.Background()); err != nil {
			t.Fatal(err)
		}
		var st client.RotationStatus
		waitFor(t, 2*time.Minute, "the rotation", func() bool {
			st, err = e.admin.MasterKeyRotation(context.Background())
			return err == nil && st.State != "running"
		})
		if st.State != "completed" || st.Done < 11 || len(st.KeyVersions) != 1 || st.KeyVersions[0] != 2 {
			t.Fatalf("rotation on PostgreSQL ended %+v", st)
		}
	})
	if t.Failed() {
		return
	}
	e := startIn(t, dir, clk, onPostgres)
	unseal(t, e.admin, res.Shares[1:]...)
	a := e.as(e.admin)
	for ct, id := range wrapped {
		if out := a.must("POST", client.Path("api", "v2", "keys", id, "actions", "unwrap"), kpHeader(guid), map[string]any{"ciphertext": ct}); out["plaintext"] != sealPlaintext {
			t.Fatalf("unwrap after the rotation and a restart = %v", out["plaintext"])
		}
	}
}

// consoleSignIn signs in to the console with an API key, as a browser
// does, and fails unless a session results.
func consoleSignIn(t *testing.T, baseURL, apikey string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Get(baseURL + "/console/signin")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="csrf_token" value="([^"]+)"`).FindSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token on the console's sign-in page")
	}
	resp, err = hc.PostForm(baseURL+"/console/signin", url.Values{"csrf_token": {string(m[1])}, "apikey": {apikey}, "next": {"/console/"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("console sign-in answered %d", resp.StatusCode)
	}
}
