package e2e

import (
	be "encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/client"
)

// storedBackup takes a backup of a deployment holding some records and
// returns the backup's CRN and its file on the directory volume.
func storedBackup(t *testing.T, e *env, b *byok) (dep map[string]any, id, path string) {
	t.Helper()
	dep = b.deployment("orders-src")
	adm, cl, _ := kafkaAdmin(t, b.admin, dep)
	if _, err := adm.CreateTopic(t.Context(), 1, 1, nil, "orders"); err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if err := cl.ProduceSync(t.Context(), &kgo.Record{Topic: "orders", Value: fmt.Appendf(nil, "record %d %s", i, strings.Repeat("v", 1000))}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	b.admin.mustBackUp(dep["crn"].(string))
	bk := b.admin.backups(dep["crn"].(string))[0]
	id = bk["id"].(string)
	path = filepath.Join(e.dir, "backups", "deployments", dep["guid"].(string), id[strings.LastIndex(id, ":")+1:]+".klbackup")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the backup's file: %v", err)
	}
	return dep, id, path
}

func restoreBody(name, backupID string) map[string]any {
	return map[string]any{"name": name, "resource_id": "messagehub", "resource_plan_id": "standard", "target": "us-south",
		"parameters": map[string]any{"backup_id": backupID}}
}

// assertNothingHalfMade checks that only the given deployments have data
// and that the failed restores left no instance but failed ones.
func assertNothingHalfMade(t *testing.T, e *env, a *api, keep ...string) {
	t.Helper()
	des, err := os.ReadDir(filepath.Join(e.dir, "deployments"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	if strings.Join(names, ",") != strings.Join(keep, ",") {
		t.Fatalf("deployment data after failed restores: %v, want only %v", names, keep)
	}
	out := a.must("GET", "/v2/resource_instances?resource_id=messagehub&state=active,provisioning,inactive", nil, nil)
	if n := len(out["resources"].([]any)); n != len(keep) {
		t.Fatalf("%d live messagehub instances after failed restores, want %d: %s", n, len(keep), dump(out))
	}
}

// TestDamagedBackupIsRefusedAtRestore damages a stored backup in several
// ways: each restore is refused with a clear error before any deployment
// exists, and the intact backup then restores.
func TestDamagedBackupIsRefusedAtRestore(t *testing.T) {
	e := start(t)
	b := newBYOK(t, e)
	src, id, path := storedBackup(t, e, b)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		damage func([]byte) []byte
		code   string
		says   string
	}{
		{"a flipped byte in the data", func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }, "BACKUP_MODIFIED", "was modified"},
		{"a flipped byte in the last chunk", func(b []byte) []byte { b[len(b)-5] ^= 1; return b }, "BACKUP_MODIFIED", "was modified"},
		{"truncated to two thirds", func(b []byte) []byte { return b[:len(b)*2/3] }, "BACKUP_TRUNCATED", "truncated"},
		{"truncated before the final chunk's tag", func(b []byte) []byte { return b[:len(b)-1] }, "BACKUP_TRUNCATED", "truncated"},
		{"bytes appended", func(b []byte) []byte { return append(b, "more"...) }, "", "cannot be restored"},
		{"the header's identity changed", func(b []byte) []byte { b[60] ^= 1; return b }, "", "cannot be restored"},
		{"the wrapped key changed", func(b []byte) []byte {
			end := 14 + int(be.BigEndian.Uint32(b[10:14])) // magic, version, header length, header
			b[end-3] ^= 1
			return b
		}, "BACKUP_MODIFIED", "was modified"},
		{"not a backup at all", func(b []byte) []byte { return []byte("hello") }, "BACKUP_INVALID", "not a Keyline backup"},
		{"the file removed", func(b []byte) []byte { return nil }, "BACKUP_MISSING", "missing from the backup volume"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			damaged := c.damage(append([]byte(nil), orig...))
			if err := os.WriteFile(path, damaged, 0o600); err != nil {
				t.Fatal(err)
			}
			if damaged == nil {
				os.Remove(path)
			}
			err := b.admin.do("POST", "/v2/resource_instances", nil, restoreBody("restored", id), nil)
			ce, ok := err.(*client.Error)
			if !ok || ce.Status < 400 || ce.Status >= 500 {
				t.Fatalf("restoring a damaged backup: %v, want a clear 4xx", err)
			}
			if !strings.Contains(ce.Message, c.says) || !strings.Contains(ce.Message, id) || (c.code != "" && ce.Code != c.code) {
				t.Fatalf("restore error %s %q does not say the backup %s", ce.Code, ce.Message, c.says)
			}
			assertNothingHalfMade(t, e, b.admin, src["guid"].(string))
		})
	}
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if dst := b.admin.must("POST", "/v2/resource_instances", nil, restoreBody("restored", id)); dst["state"] != "active" {
		t.Fatalf("the intact backup does not restore: %s", dump(dst))
	}
}

// TestRestoreWithTheBackupKeyDisabledFailsClearly disables the backup key:
// the restore fails saying so and how to fix it, leaving nothing, and
// succeeds once the key is enabled again.
func TestRestoreWithTheBackupKeyDisabledFailsClearly(t *testing.T) {
	e := start(t)
	b := newBYOK(t, e)
	src, id, _ := storedBackup(t, e, b)
	// The new deployment has its own backup key, which nothing may be left on.
	key2, key2CRN := b.admin.createRootKey(b.kpGUID, "backup-key-2")
	body := restoreBody("restored", id)
	body["parameters"].(map[string]any)["backup_encryption_key_crn"] = key2CRN
	authzBefore := len(b.admin.authorizations(b.account))
	b.admin.must("POST", client.Path("api", "v2", "keys", b.keyID, "actions", "disable"), kpHeader(b.kpGUID), nil)
	ce := b.admin.fails(400, "POST", "/v2/resource_instances", nil, body)
	if !strings.Contains(ce.Message, "disabled") || !strings.Contains(ce.Message, "keyline kp key enable "+b.keyID) || !strings.Contains(ce.Message, "Nothing was restored") {
		t.Fatalf("restore with the key disabled: %q", ce.Message)
	}
	assertNothingHalfMade(t, e, b.admin, src["guid"].(string))
	if n := len(b.admin.authorizations(b.account)); n != authzBefore {
		t.Fatalf("the failed restore left authorizations: %d, had %d", n, authzBefore)
	}
	if regs := b.admin.must("GET", client.Path("api", "v2", "keys", key2, "registrations"), kpHeader(b.kpGUID), nil); strings.Contains(dump(regs), "messagehub") {
		t.Fatalf("the failed restore left a registration on the new deployment's key: %s", dump(regs))
	}
	failed := false
	for _, ev := range b.admin.events("event-streams.backup.restore", "failure") {
		failed = failed || strings.Contains(dump(ev), "disabled")
	}
	if !failed {
		t.Fatal("no audit event of the refused restore")
	}
	if bk := b.admin.backups(src["crn"].(string))[0]; bk["is_restorable"] != false {
		t.Fatalf("a backup whose key is disabled is shown restorable: %s", dump(bk))
	}
	b.admin.must("POST", client.Path("api", "v2", "keys", b.keyID, "actions", "enable"), kpHeader(b.kpGUID), nil)
	if dst := b.admin.must("POST", "/v2/resource_instances", nil, body); dst["state"] != "active" {
		t.Fatalf("restore after enabling the key: %s", dump(dst))
	}
}
