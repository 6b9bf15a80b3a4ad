package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/server"
)

// The seal modes and the keyring together: every seal protects the
// unseal key, the unseal key seals the keyring of master keys.

// pkcs11Keyring opens the stored keyring as an operator holding the HSM's
// PIN can (with the server stopped: one PKCS#11 user per process at a
// time), and returns it with the wrapped unseal key.
func pkcs11Keyring(t *testing.T, dir, label, pin string) (*seal.Keyring, []byte) {
	t.Helper()
	var wrapped, blob []byte
	db := openDB(t, dir)
	if err := db.QueryRow(`SELECT wrapped_key FROM seal_autounseal`).Scan(&wrapped); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(`SELECT keyring FROM seal_config`).Scan(&blob); err != nil {
		t.Fatal(err)
	}
	if blob == nil {
		t.Fatal("a pkcs11 data directory has no keyring")
	}
	p := pkcs11Target(label, pin).PKCS11
	w, err := seal.OpenPKCS11(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	raw, err := w.Unwrap(context.Background(), wrapped)
	if err != nil {
		t.Fatalf("the HSM does not unwrap the stored blob: %v", err)
	}
	unsealKey, err := seal.New(raw)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := seal.OpenKeyring(unsealKey, blob)
	if err != nil {
		t.Fatalf("what the HSM unwrapped does not open the stored keyring: %v", err)
	}
	return ring, wrapped
}

// wrapLoad runs wrap and unwrap callers with a's key until the returned
// stop is called, which says how many calls ran and fails the test on any
// failed call.
func wrapLoad(t *testing.T, a *api, kpGUID, keyID string) (calls *atomic.Int64, stop func()) {
	stopped := make(chan struct{})
	var wg sync.WaitGroup
	calls = new(atomic.Int64)
	var failed atomic.Int64
	var firstErr atomic.Value
	for w := 0; w < 2; w++ {
		untilStopped(&wg, stopped, func(int) {
			var out, back map[string]any
			calls.Add(1)
			err := a.do("POST", client.Path("api", "v2", "keys", keyID, "actions", "wrap"), kpHeader(kpGUID), map[string]any{"plaintext": sealPlaintext}, &out)
			if err == nil {
				err = a.do("POST", client.Path("api", "v2", "keys", keyID, "actions", "unwrap"), kpHeader(kpGUID), map[string]any{"ciphertext": out["ciphertext"]}, &back)
			}
			if err == nil && back["plaintext"] != sealPlaintext {
				err = fmt.Errorf("unwrap gave %v", back["plaintext"])
			}
			if err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err.Error())
			}
		})
	}
	return calls, func() {
		close(stopped)
		wg.Wait()
		if n := failed.Load(); n != 0 {
			t.Fatalf("%d of %d wrap calls failed during the rotation; first: %v", n, calls.Load(), firstErr.Load())
		}
	}
}

// rotateAndWait starts a master key rotation and waits for its end.
func rotateAndWait(t *testing.T, c *client.Client, toVersion uint32) {
	t.Helper()
	if _, err := c.RotateMasterKey(context.Background()); err != nil {
		t.Fatalf("rotate-master-key: %v", err)
	}
	var st client.RotationStatus
	waitFor(t, 3*time.Minute, "the rotation", func() bool {
		var err error
		st, err = c.MasterKeyRotation(context.Background())
		return err == nil && st.State != "running"
	})
	if st.State != "completed" || st.ToVersion != toVersion || len(st.KeyVersions) != 1 || st.KeyVersions[0] != toVersion {
		t.Fatalf("rotation ended %+v, want completed at version %d", st, toVersion)
	}
}

// TestPKCS11MasterKeyRotation: rotate-master-key on a pkcs11-sealed server
// under a wrap load; the keyring is re-sealed by the same unseal key (the
// HSM's blob does not change); after a restart the server unseals itself
// and everything reads back; the old master key opens nothing stored.
func TestPKCS11MasterKeyRotation(t *testing.T) {
	label, pin := softHSM(t)
	dir := t.TempDir()
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	if _, err := server.InitSeal(context.Background(), server.Config{DataDir: dir, AdminAPIKey: adminKey, Logger: testLogger(t)}, pkcs11Target(label, pin), nil); err != nil {
		t.Fatal(err)
	}
	old, wrappedBefore := pkcs11Keyring(t, dir, label, pin)
	if v := old.Versions(); len(v) != 1 || v[0] != seal.LegacyVersion {
		t.Fatalf("a new pkcs11 directory's keyring holds versions %v", v)
	}
	secrets := withSecrets(server.UnsealSecrets{PKCS11PIN: pin})
	var data *sealedData
	t.Run("rotate under load", func(t *testing.T) {
		e := startIn(t, dir, clk, secrets, func(c *server.Config) { c.MasterRotationBatch = 5 })
		mustStatus(t, e, "pkcs11")
		a := e.as(e.admin)
		data = makeSealedData(t, a, 4, 2)
		var keyID string
		for _, id := range data.wrapped {
			keyID = id
			break
		}
		calls, stop := wrapLoad(t, a, data.kpGUID, keyID)
		waitFor(t, 2*time.Minute, "the load to run", func() bool { return calls.Load() > 20 })
		rotateAndWait(t, e.admin, 2)
		during := calls.Load()
		waitFor(t, 2*time.Minute, "the load to go on", func() bool { return calls.Load() > during+20 })
		stop()
		data.checkReadable(t, a)
		events := a.must("GET", "/v1/audit/events?"+url.Values{"action": {"keyline.sys.rotate-master-key"}}.Encode(), nil, nil)["events"].([]any)
		if len(events) != 1 {
			t.Fatalf("%d audit events of the rotation, want 1", len(events))
		}
	})
	if t.Failed() {
		return
	}
	ring, wrappedAfter := pkcs11Keyring(t, dir, label, pin)
	if v := ring.Versions(); len(v) != 1 || v[0] != 2 {
		t.Fatalf("the stored keyring holds versions %v after the rotation, want [2]", v)
	}
	if !bytes.Equal(wrappedBefore, wrappedAfter) {
		t.Error("the rotation changed the wrapped unseal key: it should re-seal the keyring with the same one")
	}
	t.Run("restart", func(t *testing.T) {
		e := startIn(t, dir, clk, secrets)
		mustStatus(t, e, "pkcs11")
		data.checkReadable(t, e.as(e.admin))
	})
	if n := assertOpensNothing(t, dir, data, old); n == 0 {
		t.Fatal("no sealed value was tried")
	}
}

// TestMigrateShamirToPKCS11AfterRotation: a shamir directory whose master
// key was rotated moves to pkcs11 with its keyring (version 2 only):
// everything reads back, the old shares open nothing stored, the move is
// audited, and the keyring rotates again under pkcs11.
func TestMigrateShamirToPKCS11AfterRotation(t *testing.T) {
	label, pin := softHSM(t)
	dir, shares := shamirDir(t)
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	var data *sealedData
	t.Run("shamir life", func(t *testing.T) {
		e := startIn(t, dir, clk)
		unseal(t, e.admin, shares[:3]...)
		data = makeSealedData(t, e.as(e.admin), 2, 1)
		rotateAndWait(t, e.admin, 2)
	})
	if t.Failed() {
		return
	}
	rotated := masterKeyring(t, dir, shares[:3])
	var oldKeyring []byte
	if err := openDB(t, dir).QueryRow(`SELECT keyring FROM seal_config`).Scan(&oldKeyring); err != nil {
		t.Fatal(err)
	}
	res, err := server.InitSeal(context.Background(), server.Config{DataDir: dir, Logger: testLogger(t)}, pkcs11Target(label, pin), shares[1:4])
	if err != nil || !res.Migrated || res.From != server.SealShamir {
		t.Fatalf("migrate: %+v, %v", res, err)
	}
	ring, _ := pkcs11Keyring(t, dir, label, pin)
	if v := ring.Versions(); len(v) != 1 || v[0] != 2 {
		t.Fatalf("the migrated keyring holds versions %v, want [2]", v)
	}
	// The same master key v2: what it sealed before the move opens with the
	// keyring the HSM protects now.
	probe := rotated.AEAD().Seal([]byte("probe"), []byte("aad"))
	if _, _, err := ring.Open(probe, []byte("aad")); err != nil {
		t.Fatal("the migration did not keep master key version 2")
	}
	// The shares rebuild an unseal key that opens neither the stored key
	// check nor the stored keyring.
	oldUnseal, _ := seal.New(combineShares(t, shares[:3]))
	var check, blob []byte
	if err := openDB(t, dir).QueryRow(`SELECT key_check, keyring FROM seal_config`).Scan(&check, &blob); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(blob, oldKeyring) {
		t.Error("the keyring was not sealed again")
	}
	if _, err := oldUnseal.Open(check, []byte("keyline/seal/key-check")); err == nil {
		t.Error("the old shares open the key check after the migration")
	}
	if _, err := seal.OpenKeyring(oldUnseal, blob); err == nil {
		t.Error("the old shares open the keyring after the migration")
	}
	secrets := withSecrets(server.UnsealSecrets{PKCS11PIN: pin})
	t.Run("pkcs11 life", func(t *testing.T) {
		e := startIn(t, dir, clk, secrets)
		mustStatus(t, e, "pkcs11")
		a := e.as(e.admin)
		data.checkReadable(t, a)
		events := a.must("GET", "/v1/audit/events?"+url.Values{"action": {"keyline.sys.init"}}.Encode(), nil, nil)["events"].([]any)
		if len(events) != 2 || !strings.Contains(dump(events), `"migrated_from": "shamir"`) || !strings.Contains(dump(events), `"seal": "pkcs11"`) {
			t.Fatalf("audit of init and migrate: %s", dump(events))
		}
		if _, err := e.admin.Unseal(context.Background(), shares[0], false); err == nil {
			t.Fatal("an unsealed pkcs11 server took a share")
		}
		rotateAndWait(t, e.admin, 3)
		data.checkReadable(t, a)
	})
	if t.Failed() {
		return
	}
	assertOpensNothing(t, dir, data, rotated)
}

// TestLegacyPKCS11DirectoryMovesToKeyring: a pkcs11 directory from before
// the keyring form (the HSM wraps the master key itself, no keyring) still
// unseals itself; rotation asks for rekey, which wraps a fresh unseal key
// (no shares) under the same HSM key; then the master key rotates and the
// old one opens nothing.
func TestLegacyPKCS11DirectoryMovesToKeyring(t *testing.T) {
	label, pin := softHSM(t)
	dir := t.TempDir()
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	var data *sealedData
	t.Run("dev life", func(t *testing.T) {
		e := startIn(t, dir, clk)
		data = makeSealedData(t, e.as(e.admin), 2, 1)
	})
	if t.Failed() {
		return
	}
	master, err := seal.ReadMasterKey(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := server.InitSeal(context.Background(), server.Config{DataDir: dir, Logger: testLogger(t)}, pkcs11Target(label, pin), nil); err != nil {
		t.Fatal(err)
	}
	// What `operator init --seal pkcs11` wrote before keyrings: the master
	// key wrapped by the HSM, the key check sealed by it, no keyring.
	w, err := seal.OpenPKCS11(pkcs11Target(label, pin).PKCS11, false)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := w.Wrap(context.Background(), master)
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	m, _ := seal.New(master)
	db, err := sql.Open("sqlite", "file:"+filepath.Join(dir, "keyline.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE seal_config SET key_check = ?, keyring = NULL`, m.Seal([]byte("keyline master key check v1"), []byte("keyline/seal/key-check"))); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE seal_autounseal SET wrapped_key = ?`, wrapped); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := os.Stat(filepath.Join(dir, "master.key")); err == nil {
		t.Fatal("the dev key file is still there")
	}
	old, _ := seal.NewKeyring(seal.LegacyVersion, master)

	secrets := withSecrets(server.UnsealSecrets{PKCS11PIN: pin})
	t.Run("legacy life", func(t *testing.T) {
		e := startIn(t, dir, clk, secrets)
		mustStatus(t, e, "pkcs11")
		a := e.as(e.admin)
		data.checkReadable(t, a)
		if _, err := e.admin.RotateMasterKey(context.Background()); err == nil || !strings.Contains(err.Error(), "rekey") || !strings.Contains(err.Error(), "pkcs11") {
			t.Fatalf("rotation of a legacy pkcs11 directory: %v, want a refusal that says rekey", err)
		}
		// Through the CLI: it asks for no shares and prints none.
		if out := rekeyCLI(t, e.url, ""); !strings.Contains(out, `"rewrapped": true`) || strings.Contains(out, "unseal_keys") {
			t.Fatalf("operator rekey under pkcs11 printed %s", out)
		}
		rotateAndWait(t, e.admin, 2)
		data.checkReadable(t, a)
		events := a.must("GET", "/v1/audit/events?"+url.Values{"action": {"keyline.sys.rekey"}}.Encode(), nil, nil)["events"].([]any)
		if len(events) != 1 {
			t.Fatalf("%d audit events of the rekey, want 1", len(events))
		}
	})
	if t.Failed() {
		return
	}
	ring, wrappedNow := pkcs11Keyring(t, dir, label, pin)
	if bytes.Equal(wrappedNow, wrapped) {
		t.Error("rekey did not replace the wrapped master key")
	}
	if v := ring.Versions(); len(v) != 1 || v[0] != 2 {
		t.Fatalf("keyring versions %v, want [2]", v)
	}
	t.Run("restart", func(t *testing.T) {
		e := startIn(t, dir, clk, secrets)
		mustStatus(t, e, "pkcs11")
		data.checkReadable(t, e.as(e.admin))
	})
	assertOpensNothing(t, dir, data, old)
}
