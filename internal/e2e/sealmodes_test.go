package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/server"
	"github.com/keyline/keyline/internal/store/storetest"
)

const softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

// softHSM makes a SoftHSM2 token of its own for the test (its config and
// token directory in a temporary directory, named by SOFTHSM2_CONF for
// this process and the binaries it runs) and returns its label and PIN.
func softHSM(t *testing.T) (label, pin string) {
	t.Helper()
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		t.Skip("softhsm2-util is not installed (Debian package softhsm2; scripts/test installs it): the pkcs11 seal is not tested")
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	label, pin = "keyline-test", "4321"
	out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--pin", pin, "--so-pin", "87654321").CombinedOutput()
	if err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return label, pin
}

func pkcs11Target(label, pin string) server.SealTarget {
	return server.SealTarget{Mode: server.SealPKCS11,
		PKCS11: seal.PKCS11Config{Module: softHSMModule, TokenLabel: label, KeyLabel: "keyline-master", PIN: pin}}
}

func withSecrets(u server.UnsealSecrets) func(*server.Config) {
	return func(c *server.Config) { c.Unseal = u }
}

// startFails is a start of dir that must fail; it returns why.
func startFails(t *testing.T, dir string, opts ...func(*server.Config)) string {
	t.Helper()
	cfg := server.Config{DataDir: dir, Listen: "127.0.0.1:0", AdminAPIKey: adminKey, Logger: testLogger(t)}
	for _, o := range opts {
		o(&cfg)
	}
	srv, err := server.New(context.Background(), cfg)
	if err == nil {
		srv.Close()
		t.Fatal("the server started")
	}
	return err.Error()
}

// wrapSomething creates a Key Protect instance and root key and wraps the
// test plaintext with it.
func wrapSomething(e *env) (kpGUID, keyID, wrapped string) {
	a := e.as(e.admin)
	kpGUID = a.keyProtect("seal-kp")
	keyID, _ = a.createRootKey(kpGUID, "seal-root")
	out := a.must("POST", client.Path("api", "v2", "keys", keyID, "actions", "wrap"), kpHeader(kpGUID), map[string]any{"plaintext": sealPlaintext})
	return kpGUID, keyID, out["ciphertext"].(string)
}

func mustUnwrap(t *testing.T, e *env, kpGUID, keyID, wrapped string) {
	t.Helper()
	out := e.as(e.admin).must("POST", client.Path("api", "v2", "keys", keyID, "actions", "unwrap"), kpHeader(kpGUID), map[string]any{"ciphertext": wrapped})
	if out["plaintext"] != sealPlaintext {
		t.Fatalf("unwrap after the restart = %v", out["plaintext"])
	}
}

func mustStatus(t *testing.T, e *env, mode string) {
	t.Helper()
	st, err := e.admin.SealStatus(context.Background())
	if err != nil || st.Sealed || !st.Initialized || st.Type != mode {
		t.Fatalf("seal status = %+v, %v; want unsealed %s", st, err, mode)
	}
}

// TestPKCS11SealUnsealsAtStart: a data directory sealed by a SoftHSM2 key
// unseals itself at every start; the PIN is stored nowhere; a wrong PIN or
// token label is refused with a clear error.
func TestPKCS11SealUnsealsAtStart(t *testing.T) {
	label, pin := softHSM(t)
	dir := t.TempDir()
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	res, err := server.InitSeal(context.Background(), server.Config{DataDir: dir, AdminAPIKey: adminKey, Logger: testLogger(t)}, pkcs11Target(label, pin), nil)
	if err != nil || res.AdminAPIKey != adminKey || len(res.Shares) != 0 {
		t.Fatalf("init: %+v, %v", res, err)
	}
	secrets := withSecrets(server.UnsealSecrets{PKCS11PIN: pin})
	var kpGUID, keyID, wrapped string
	t.Run("first life", func(t *testing.T) {
		e := startIn(t, dir, clk, secrets)
		mustStatus(t, e, "pkcs11")
		kpGUID, keyID, wrapped = wrapSomething(e)
	})
	t.Run("second life", func(t *testing.T) {
		e := startIn(t, dir, clk, secrets)
		mustStatus(t, e, "pkcs11")
		mustUnwrap(t, e, kpGUID, keyID, wrapped)
		// The emergency brake works; shares mean nothing to it after, and
		// the console says to restart.
		if st, err := e.admin.Seal(context.Background()); err != nil || !st.Sealed || st.Type != "pkcs11" {
			t.Fatalf("operator seal: %+v, %v", st, err)
		}
		if _, err := e.admin.Unseal(context.Background(), "whatever", false); err == nil || !strings.Contains(err.Error(), "restart") {
			t.Fatalf("unseal of a sealed pkcs11 server: %v", err)
		}
		resp, err := http.Get(e.url + "/console/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "restart it") || strings.Contains(string(body), "operator unseal") {
			t.Fatalf("console of a sealed pkcs11 server: %d %s", resp.StatusCode, body)
		}
	})
	if why := startFails(t, dir, withSecrets(server.UnsealSecrets{PKCS11PIN: "9999"})); !strings.Contains(why, "wrong PIN") || !strings.Contains(why, label) {
		t.Errorf("start with a wrong PIN: %s", why)
	}
	if why := startFails(t, dir); !strings.Contains(why, "no PIN") || !strings.Contains(why, "KEYLINE_PKCS11_PIN") {
		t.Errorf("start without a PIN: %s", why)
	}
	// The token is gone, another in its place: the start names the label.
	relabel := exec.Command("softhsm2-util", "--delete-token", "--token", label)
	if out, err := relabel.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --delete-token: %v\n%s", err, out)
	}
	if out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", "another", "--pin", pin, "--so-pin", "87654321").CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	if why := startFails(t, dir, secrets); !strings.Contains(why, "no such token") || !strings.Contains(why, label) {
		t.Errorf("start without its token: %s", why)
	}
	wrong := pkcs11Target("no-such-token", pin)
	_, err = server.InitSeal(context.Background(), server.Config{DataDir: t.TempDir(), Logger: testLogger(t)}, wrong, nil)
	if err == nil || !strings.Contains(err.Error(), "no such token") || !strings.Contains(err.Error(), "no-such-token") {
		t.Errorf("init with a wrong token label: %v", err)
	}
	// Neither the PIN nor the master key in any form is in the database.
	data, err := os.ReadFile(filepath.Join(dir, "keyline.db"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "PIN") || strings.Contains(string(data), `"pin"`) {
		t.Error("the database names a PIN")
	}
	if _, err := os.Stat(filepath.Join(dir, "master.key")); err == nil {
		t.Error("a pkcs11 data directory has a master key file")
	}
}

// TestMigrateToPKCS11KeepsData: a shamir directory (given its shares) and
// a dev directory move to the pkcs11 seal with every key kept.
func TestMigrateToPKCS11KeepsData(t *testing.T) {
	label, pin := softHSM(t)
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	secrets := withSecrets(server.UnsealSecrets{PKCS11PIN: pin})
	for _, from := range []string{"shamir", "dev"} {
		t.Run(from, func(t *testing.T) {
			// The directories belong to this test, not to the subtest.
			dir := t.TempDir()
			var shares []string
			if from == "shamir" {
				dir, shares = shamirDir(t)
			}
			var kpGUID, keyID, wrapped string
			t.Run("before", func(t *testing.T) {
				e := startIn(t, dir, clk)
				if from == "shamir" {
					unseal(t, e.admin, shares[:3]...)
				}
				kpGUID, keyID, wrapped = wrapSomething(e)
			})
			cfg := server.Config{DataDir: dir, Logger: testLogger(t)}
			if from == "shamir" {
				if _, err := server.InitSeal(context.Background(), cfg, pkcs11Target(label, pin), shares[:2]); err == nil || !strings.Contains(err.Error(), "give 3 of its 5") {
					t.Fatalf("migrate with two shares: %v", err)
				}
			}
			res, err := server.InitSeal(context.Background(), cfg, pkcs11Target(label, pin), shares)
			if err != nil || !res.Migrated || res.From != from || res.AdminAPIKey != "" {
				t.Fatalf("migrate: %+v, %v", res, err)
			}
			if _, err := os.Stat(filepath.Join(dir, "master.key")); err == nil {
				t.Error("the dev master key file is still there")
			}
			t.Run("after", func(t *testing.T) {
				e := startIn(t, dir, clk, secrets)
				mustStatus(t, e, "pkcs11")
				mustUnwrap(t, e, kpGUID, keyID, wrapped)
			})
		})
	}
}

// TestKMSSealThroughAnotherKeyline: Keyline B keeps its master key wrapped
// by a root key of Keyline A, through A's Key Protect API and an API key
// of a service ID that may only wrap and unwrap there; B unseals itself
// at start while A answers, and refuses to start, saying why, when the
// key is disabled or A is gone.
func TestKMSSealThroughAnotherKeyline(t *testing.T) {
	dirB := t.TempDir()
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	var target server.SealTarget
	var kpGUID, keyID, wrapped string
	t.Run("A alive", func(t *testing.T) {
		a := start(t)
		admin := a.as(a.admin)
		account, _ := admin.account()
		guid := admin.keyProtect("seal-of-b")
		rootID, _ := admin.createRootKey(guid, "b-master")
		sid := admin.must("POST", "/v1/serviceids", nil, map[string]any{"name": "keyline-b", "account_id": account})
		apikey := admin.must("POST", "/v1/apikeys", nil, map[string]any{"name": "keyline-b-key", "iam_id": sid["iam_id"], "account_id": account})["apikey"].(string)
		admin.must("POST", "/v1/policies", nil, map[string]any{
			"type":     "access",
			"subjects": []any{map[string]any{"attributes": []any{map[string]any{"name": "iam_id", "value": sid["iam_id"]}}}},
			"roles":    []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Writer"}},
			"resources": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": account},
				map[string]any{"name": "serviceName", "value": "kms"}, map[string]any{"name": "serviceInstance", "value": guid}}}},
		})
		target = server.SealTarget{Mode: server.SealKMS, KMS: seal.KMSConfig{URL: a.url, InstanceID: guid, KeyID: rootID, APIKey: apikey}}
		bad := target
		bad.KMS.APIKey = "not-an-api-key-of-a"
		if _, err := server.InitSeal(context.Background(), server.Config{DataDir: t.TempDir(), Logger: testLogger(t)}, bad, nil); err == nil || !strings.Contains(err.Error(), a.url) {
			t.Fatalf("init with a wrong API key: %v", err)
		}
		if _, err := server.InitSeal(context.Background(), server.Config{DataDir: dirB, AdminAPIKey: adminKey, Logger: testLogger(t)}, target, nil); err != nil {
			t.Fatal(err)
		}
		secrets := withSecrets(server.UnsealSecrets{KMSAPIKey: apikey})
		t.Run("B first life", func(t *testing.T) {
			b := startIn(t, dirB, clk, secrets)
			mustStatus(t, b, "kms")
			kpGUID, keyID, wrapped = wrapSomething(b)
		})
		t.Run("B second life", func(t *testing.T) {
			b := startIn(t, dirB, clk, secrets)
			mustStatus(t, b, "kms")
			mustUnwrap(t, b, kpGUID, keyID, wrapped)
		})
		admin.must("POST", client.Path("api", "v2", "keys", rootID, "actions", "disable"), kpHeader(guid), nil)
		if why := startFails(t, dirB, secrets); !strings.Contains(why, "sealed") || !strings.Contains(strings.ToLower(why), "disabled") {
			t.Errorf("start of B with its key disabled on A: %s", why)
		}
		admin.must("POST", client.Path("api", "v2", "keys", rootID, "actions", "enable"), kpHeader(guid), nil)
		t.Run("B after the key is enabled again", func(t *testing.T) {
			mustStatus(t, startIn(t, dirB, clk, secrets), "kms")
		})
	})
	// A is stopped now.
	why := startFails(t, dirB, withSecrets(server.UnsealSecrets{KMSAPIKey: target.KMS.APIKey}))
	if !strings.Contains(why, "sealed") || !strings.Contains(why, target.KMS.URL) || !strings.Contains(why, "refused") {
		t.Errorf("start of B with A stopped: %s", why)
	}
}

// TestPKCS11SealThroughTheCLI: `keyline operator init --seal pkcs11` and
// `keyline serve` with the PIN from a file, as an operator runs them.
func TestPKCS11SealThroughTheCLI(t *testing.T) {
	label, pin := softHSM(t)
	dir := t.TempDir()
	pinFile := filepath.Join(t.TempDir(), "pin")
	if err := os.WriteFile(pinFile, []byte(pin+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCLI(t, "")
	c.env = []string{"KEYLINE_ADMIN_APIKEY=" + adminKey}
	out := c.must("operator", "init", "--data-dir", dir, "--seal", "pkcs11", "--pkcs11-module", softHSMModule,
		"--pkcs11-token-label", label, "--pkcs11-pin-file", pinFile)
	if strings.Contains(out, "Unseal Key") || !strings.Contains(out, "unseals itself") {
		t.Fatalf("init output:\n%s", out)
	}
	if _, errOut, code := c.run("operator", "init", "--data-dir", dir); code == 0 || !strings.Contains(errOut, "operator migrate") {
		t.Fatalf("a second init: exit %d, %s", code, errOut)
	}
	p := serveProcessWith(t, dir, serveOptions{args: []string{"--pkcs11-pin-file", pinFile}})
	st, err := client.New(p.url, adminKey).SealStatus(context.Background())
	if err != nil || st.Sealed || st.Type != "pkcs11" {
		t.Fatalf("seal status: %+v, %v", st, err)
	}
	p.kill()
	// A wrong PIN in the environment: serve exits at once and says why.
	cmd := exec.Command(binary(t), "serve", "--data-dir", dir, "--listen", freePort(t))
	cmd.Env = append(os.Environ(), "KEYLINE_PKCS11_PIN=0000")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan struct{})
	var serveOut []byte
	go func() { serveOut, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-done
		t.Fatal("serve with a wrong PIN did not exit")
	}
	if err == nil || !strings.Contains(string(serveOut), "wrong PIN") || strings.Contains(string(serveOut), "panic") {
		t.Fatalf("serve with a wrong PIN: %v\n%s", err, fmt.Sprint(string(serveOut)))
	}
}

// TestMigrateShamirToPKCS11ThroughTheCLI: `keyline operator migrate` reads
// the threshold of shares from standard input, one per line.
func TestMigrateShamirToPKCS11ThroughTheCLI(t *testing.T) {
	label, pin := softHSM(t)
	dir, shares := shamirDir(t)
	migrate := func(stdin string) (string, error) {
		cmd := exec.Command(binary(t), "operator", "migrate", "--data-dir", dir, "--seal", "pkcs11",
			"--pkcs11-module", softHSMModule, "--pkcs11-token-label", label)
		cmd.Env = append(os.Environ(), "KEYLINE_PKCS11_PIN="+pin)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := migrate(shares[0] + "\n"); err == nil || !strings.Contains(out, "give 3 of its 5 unseal key shares") {
		t.Fatalf("migrate with one share: %v\n%s", err, out)
	}
	if out, err := migrate(shares[0] + "\n" + shares[1] + "\n" + shares[4] + "\n"); err != nil || !strings.Contains(out, "shamir seal are kept under the pkcs11 seal") {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	p := serveProcessWith(t, dir, serveOptions{env: []string{"KEYLINE_PKCS11_PIN=" + pin}})
	if st, err := client.New(p.url, adminKey).SealStatus(context.Background()); err != nil || st.Sealed || st.Type != "pkcs11" {
		t.Fatalf("seal status after the migration: %+v, %v", st, err)
	}
}

// TestPKCS11SealOnPostgreSQL: the seal's parameters and wrapped key live
// in the PostgreSQL database like the rest of the metadata.
func TestPKCS11SealOnPostgreSQL(t *testing.T) {
	databaseURL := storetest.URL(t)
	if databaseURL == "" {
		t.Skip("KEYLINE_TEST_DATABASE_URL is not set")
	}
	label, pin := softHSM(t)
	dir := t.TempDir()
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	cfg := server.Config{DataDir: dir, DatabaseURL: databaseURL, AdminAPIKey: adminKey, Logger: testLogger(t)}
	if _, err := server.InitSeal(context.Background(), cfg, pkcs11Target(label, pin), nil); err != nil {
		t.Fatal(err)
	}
	opts := []func(*server.Config){withSecrets(server.UnsealSecrets{PKCS11PIN: pin}), func(c *server.Config) { c.DatabaseURL = databaseURL }}
	var kpGUID, keyID, wrapped string
	t.Run("first life", func(t *testing.T) {
		e := startIn(t, dir, clk, opts...)
		mustStatus(t, e, "pkcs11")
		kpGUID, keyID, wrapped = wrapSomething(e)
	})
	e := startIn(t, dir, clk, opts...)
	mustStatus(t, e, "pkcs11")
	mustUnwrap(t, e, kpGUID, keyID, wrapped)
}
