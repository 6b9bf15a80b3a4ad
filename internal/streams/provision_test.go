package streams

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

func TestProvisionRefusesBadKeys(t *testing.T) {
	h := newHarness(t)
	h.kms.authorize(testAccount, kpInstance, false)
	const unauthInstance = "99999999-2222-3333-4444-555555555555"
	root := h.kms.addKey(t, testAccount, "us-south", kpInstance, false)
	standard := h.kms.addKey(t, testAccount, "us-south", kpInstance, true)
	deleted := h.kms.addKey(t, testAccount, "us-south", kpInstance, false)
	h.kms.act(t, deleted, ActionDelete)
	disabled := h.kms.addKey(t, testAccount, "us-south", kpInstance, false)
	h.kms.act(t, disabled, ActionDisable)
	foreign := h.kms.addKey(t, otherAccount, "us-south", kpInstance, false)
	unauthorized := h.kms.addKey(t, testAccount, "us-south", unauthInstance, false)
	missing := crn.New("kms", "us-south", testAccount, kpInstance).Child("key", "0b1c2d3e-0000-0000-0000-000000000000").String()
	tokyo := h.kms.addKey(t, testAccount, "jp-tok", kpInstance, false)
	rootID := strings.TrimPrefix(root[strings.LastIndex(root, ":"):], ":")
	disabledID := disabled[strings.LastIndex(disabled, ":")+1:]

	tests := []struct {
		name   string
		params map[string]any
		code   string
		want   string
	}{
		{"bare key ID", map[string]any{ParamDiskKey: rootID}, "KEY_CRN_REQUIRED",
			"disk_encryption_key_crn must be the key's full CRN (crn:v1:...:key:<id>), not just its ID: copy it from the CRN column of `keyline kp keys -i <Key Protect instance>`, or from `keyline kp key show " + rootID + " -i <Key Protect instance>`"},
		{"malformed CRN", map[string]any{ParamDiskKey: "crn:v1:bluemix:public:kms:us-south"}, "INVALID_KEY_CRN", "disk_encryption_key_crn is not a valid key CRN: a CRN has 10 segments"},
		{"not a key CRN", map[string]any{ParamDiskKey: crn.New("kms", "us-south", testAccount, kpInstance).String()}, "INVALID_KEY_CRN", "must be the CRN of a Key Protect key"},
		{"not a string", map[string]any{ParamDiskKey: 42}, "INVALID_KEY_CRN", "must be a string"},
		{"standard key", map[string]any{ParamDiskKey: standard}, "KEY_NOT_ROOT", "is a standard key"},
		{"deleted key", map[string]any{ParamDiskKey: deleted}, "KEY_DELETED", "has been deleted"},
		{"disabled key", map[string]any{ParamDiskKey: disabled}, "KEY_DISABLED", "is disabled: enable it with `keyline kp key enable " + disabledID + " -i " + kpInstance + "`"},
		{"key of another account", map[string]any{ParamDiskKey: foreign}, "KEY_OTHER_ACCOUNT", "belongs to account " + otherAccount + ", not to the deployment's account " + testAccount},
		{"key that does not exist", map[string]any{ParamDiskKey: missing}, "KEY_NOT_FOUND", "does not exist"},
		{"no authorization", map[string]any{ParamDiskKey: unauthorized}, "S2S_AUTHORIZATION_MISSING",
			"Missing or mis-configured S2S Authorization Policy. The service could not configure access to the encryption key specified as " + unauthorized + ": create one with `keyline iam authorization-policy-create messagehub kms Reader"},
		{"backup key outside backup regions", map[string]any{ParamBackupKey: tokyo}, "BACKUP_KEY_REGION", "must be a key in us-south, us-east or eu-de"},
		{"backup key without delegation", map[string]any{ParamDiskKey: root, ParamBackupKey: root}, "S2S_DELEGATION_MISSING", "Reader,AuthorizationDelegator"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			inst := newInstance()
			_, err := h.svc.Provision(context.Background(), inst, tc.params)
			e := errs.As(err)
			if e == nil {
				t.Fatalf("provisioned; want a 400 %s", tc.code)
			}
			if e.Kind.Status() != 400 || e.Code != tc.code || !strings.Contains(e.Msg, tc.want) {
				t.Fatalf("got %d %s %q\nwant 400 %s containing %q", e.Kind.Status(), e.Code, e.Msg, tc.code, tc.want)
			}
			if _, err := h.svc.Deployment(context.Background(), inst.GUID); errs.KindOf(err) != errs.NotExist {
				t.Fatalf("a refused deployment exists: %v", err)
			}
			if _, err := os.Stat(h.svc.deploymentDir(inst.GUID)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a refused deployment left data: %v", err)
			}
		})
	}
	h.kms.mu.Lock()
	defer h.kms.mu.Unlock()
	if len(h.kms.regs) != 0 {
		t.Fatalf("refused provisions left registrations: %v", h.kms.regs)
	}
}

func TestProvisionRegistersKeysAndDelegatesBackupKey(t *testing.T) {
	h := newHarness(t)
	h.kms.authorize(testAccount, kpInstance, true)
	disk := h.kms.addKey(t, testAccount, "us-south", kpInstance, false)
	backup := h.kms.addKey(t, testAccount, "us-east", kpInstance, false)

	first := newInstance()
	warnings, err := h.svc.Provision(context.Background(), first, map[string]any{ParamDiskKey: disk, ParamBackupKey: backup})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "only keys in us-south and eu-de survive a region failure") {
		t.Fatalf("warnings %q: want the region-failure warning", warnings)
	}
	for _, k := range []string{disk, backup} {
		if v, ok := h.kms.registration(k, first.CRN); !ok || v != h.kms.latestVersion(k) {
			t.Fatalf("registration on %s: %q %v, want the key's version", k, v, ok)
		}
	}
	if len(h.iam.dependent) != 1 {
		t.Fatalf("dependent authorizations %+v, want one", h.iam.dependent)
	}
	dep := h.iam.dependent[0]
	if dep.Service != "is" || dep.Role != auth.RoleReader || dep.Source != "crn-"+first.CRN || dep.Target.ServiceInstance != kpInstance || dep.Target.ResourceID == "" {
		t.Fatalf("dependent authorization %+v: want is -> kms Reader on the key, created by the deployment", dep)
	}

	second := newInstance()
	warnings, err = h.svc.Provision(context.Background(), second, map[string]any{ParamDiskKey: disk, ParamBackupKey: backup})
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 2 || !strings.Contains(warnings[1], "already used by 1 other deployment(s) ("+first.CRN+")") {
		t.Fatalf("warnings %q: want the key-reuse warning naming the first deployment", warnings)
	}
	info, err := h.svc.Deployment(context.Background(), second.GUID)
	if err != nil {
		t.Fatal(err)
	}
	if info.DiskEncryptionKeyCRN != disk || info.BackupEncryptionKeyCRN != backup || info.State != StateActive {
		t.Fatalf("deployment %+v", info)
	}
}

func TestProduceAndConsumeOverSASL(t *testing.T) {
	h := newHarness(t)
	inst, _ := h.provisionWithKey()
	h.createTopic(inst, "orders", 2)
	produceN(t, h.client(inst, auth.RoleWriter), "orders", "order", 200)
	got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders")), 200)
	if len(got) != 200 {
		t.Fatalf("consumed %d distinct records, want 200", len(got))
	}

	t.Run("a reader cannot produce", func(t *testing.T) {
		cl := h.client(inst, auth.RoleReader, kgo.DisableIdempotentWrite())
		err := cl.ProduceSync(testCtx(t), &kgo.Record{Topic: "orders", Value: []byte("x")}).FirstErr()
		if !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Fatalf("produce as reader: %v", err)
		}
	})
	t.Run("a login refused says why", func(t *testing.T) {
		creds, _ := h.svc.Credentials(inst.GUID, h.iam.credentials(inst.AccountID, inst.GUID, "x", auth.RoleReader))
		brokers := creds["kafka_brokers_sasl"].([]string)
		for _, tc := range []struct{ user, pass, want string }{
			{"admin", creds["api_key"].(string), `the SASL user name must be "token"`},
			{"token", "not-a-key", "the API key is not valid"},
			{"token", h.iam.grant(testAccount, "another-deployment", auth.RoleManager), "has no Reader, Writer or Manager role on Event Streams instance " + inst.GUID},
		} {
			err := h.clientWith(brokers, tc.user, tc.pass).Ping(testCtx(t))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("login %s: %v, want %q", tc.user, err, tc.want)
			}
		}
	})
	t.Run("data survives a restart", func(t *testing.T) {
		h.restart()
		got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("orders")), 200)
		if len(got) != 200 {
			t.Fatalf("consumed %d distinct records after restart, want 200", len(got))
		}
	})
}

func TestServiceManagedKeyEncryptsWithoutBYOK(t *testing.T) {
	h := newHarness(t)
	inst := newInstance()
	if _, err := h.svc.Provision(context.Background(), inst, nil); err != nil {
		t.Fatal(err)
	}
	h.createTopic(inst, "logs", 1)
	produceN(t, h.client(inst, auth.RoleWriter), "logs", "secret-line", 50)
	h.restart()
	got := consumeAll(t, h.client(inst, auth.RoleReader, kgo.ConsumeTopics("logs")), 50)
	if len(got) != 50 {
		t.Fatalf("consumed %d records, want 50", len(got))
	}
	h.svc.Close()
	assertNoPlaintext(t, h.svc.deploymentDir(inst.GUID), "secret-line")
}

// assertNoPlaintext fails if any file under dir contains needle.
func assertNoPlaintext(t *testing.T, dir, needle string) {
	t.Helper()
	n := 0
	err := walkFiles(dir, func(b []byte) {
		n++
		if strings.Contains(string(b), needle) {
			t.Errorf("a file holds %q in plain form", needle)
		}
	})
	if err != nil || n == 0 {
		t.Fatalf("read %d files: %v", n, err)
	}
}

func walkFiles(dir string, fn func([]byte)) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := dir + "/" + e.Name()
		if e.IsDir() {
			if err := walkFiles(p, fn); err != nil {
				return err
			}
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fn(b)
	}
	return nil
}

func TestProvisionRetriedAfterACrashSucceedsAgain(t *testing.T) {
	h := newHarness(t)
	inst, key := h.provisionWithKey()
	ctx := context.Background()
	if w, err := h.svc.Provision(ctx, inst, map[string]any{ParamDiskKey: key}); err != nil || len(w) != 0 {
		t.Fatalf("the same provision again: %v %v, want success", w, err)
	}
	_, err := h.svc.Provision(ctx, inst, nil)
	if errs.KindOf(err) != errs.Conflict {
		t.Fatalf("a different provision of the same GUID: %v, want 409", err)
	}
}

func TestKafkaPortComesFromTheRangeAndSurvivesRestart(t *testing.T) {
	h := newHarness(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	h.svc.Close()
	svc, err := New(context.Background(), Config{DB: h.db, Audit: h.audit, Keys: h.kms, Identity: h.iam, Tasks: h.tasks,
		States: h.states, MasterKey: h.master, DataDir: filepath.Join(h.dir, "data"), PortMin: base, PortMax: base + 20,
		AdvertisedHost: "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	inst := newInstance()
	if _, err := svc.Provision(context.Background(), inst, nil); err != nil {
		t.Fatal(err)
	}
	info, _ := svc.Deployment(context.Background(), inst.GUID)
	host, portStr, _ := net.SplitHostPort(info.KafkaBrokers[0])
	port, _ := strconv.Atoi(portStr)
	if host != "localhost" || port < base || port > base+20 {
		t.Fatalf("brokers %v: want localhost with a port in %d-%d", info.KafkaBrokers, base, base+20)
	}
	svc.Close()
	svc2, err := New(context.Background(), Config{DB: h.db, Audit: h.audit, Keys: h.kms, Identity: h.iam, Tasks: h.tasks,
		States: h.states, MasterKey: h.master, DataDir: filepath.Join(h.dir, "data"), PortMin: base, PortMax: base + 20})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc2.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer svc2.Close()
	if again, _ := svc2.Deployment(context.Background(), inst.GUID); again.KafkaBrokers[0] != "127.0.0.1:"+portStr {
		t.Fatalf("brokers after restart %v, want port %s kept", again.KafkaBrokers, portStr)
	}
}

func TestAdminAPIAndMetadataNeedCredentials(t *testing.T) {
	h := newHarness(t)
	inst, _ := h.provisionWithKey()
	h.createTopic(inst, "orders", 2)
	srv := httptest.NewServer(h.svc.Handler())
	defer srv.Close()
	manager := h.iam.grant(testAccount, inst.GUID, auth.RoleManager)
	stranger := h.iam.grant(testAccount, "another-deployment", auth.RoleManager)
	tests := []struct {
		name, path string
		basic      bool
		key        string
		want       int
	}{
		{"metadata without a token", "/messagehub/" + inst.GUID, false, "", 401},
		{"metadata with a token", "/messagehub/" + inst.GUID, false, manager, 200},
		{"metadata of another deployment's key", "/messagehub/" + inst.GUID, false, stranger, 404},
		{"topics with basic auth", "/messagehub/" + inst.GUID + "/admin/topics", true, manager, 200},
		{"topics with a bearer token", "/messagehub/" + inst.GUID + "/admin/topics", false, manager, 200},
		{"topics with a bad API key", "/messagehub/" + inst.GUID + "/admin/topics", true, "nope", 401},
		{"topics without access", "/messagehub/" + inst.GUID + "/admin/topics", true, stranger, 403},
		{"unknown deployment", "/messagehub/00000000-0000-0000-0000-000000000000/admin/topics", true, manager, 404},
		{"unknown deployment without credentials", "/messagehub/00000000-0000-0000-0000-000000000000/admin/topics", false, "", 401},
		{"unknown deployment's metadata without credentials", "/messagehub/00000000-0000-0000-0000-000000000000", false, "", 401},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+tc.path, nil)
			switch {
			case tc.basic:
				req.SetBasicAuth("token", tc.key)
			case tc.key != "":
				req.Header.Set("Authorization", "Bearer "+tc.key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}

// TestStoredKeyCRNIsParsedOnLoad: the key CRNs of a deployment are parsed
// when its record is loaded (and the parsed reference is what reaches the
// KMS, which finds a key by instance and id); a stored CRN changed behind
// Keyline's back stops the start with an error that names the deployment
// and says what is wrong, rather than a KMS call failing later.
func TestStoredKeyCRNIsParsedOnLoad(t *testing.T) {
	h := newHarness(t)
	inst, key := h.provisionWithKey()
	h.restart()
	d := h.deployment(inst.GUID)
	rec, _, _ := d.snapshot()
	if want, _ := crn.ParseKey(key); rec.DiskKey != want || rec.DiskKey.Instance != kpInstance {
		t.Fatalf("loaded disk key %+v, want %+v", rec.DiskKey, want)
	}
	if info, err := h.svc.Deployment(context.Background(), inst.GUID); err != nil || info.State != StateActive {
		t.Fatalf("after the restart: %+v %v", info, err)
	}

	h.svc.Close()
	notAKey := crn.New("kms", "us-south", testAccount, kpInstance).String()
	if err := h.db.Tx(context.Background(), func(tx *store.Tx) error {
		_, err := tx.Exec(`UPDATE streams_deployments SET disk_key_crn = ? WHERE guid = ?`, notAKey, inst.GUID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	svc, err := New(context.Background(), Config{DB: h.db, Audit: h.audit, Keys: h.kms, Identity: h.iam, Tasks: h.tasks,
		States: h.states, MasterKey: h.master, DataDir: filepath.Join(h.dir, "data")})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	err = svc.Start(context.Background())
	if err == nil || !strings.Contains(err.Error(), "deployment "+inst.GUID+": the stored disk key CRN") || !strings.Contains(err.Error(), "does not name a Key Protect key") {
		t.Fatalf("start over a stored CRN that names no key: %v", err)
	}
}
