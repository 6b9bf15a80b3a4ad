package rcapi

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/store/storetest"
)

func TestResourceKeyCredentialsAreShownOnce(t *testing.T) {
	e := newEnv(t)
	inst := e.createInstance("es", esPlan, nil)
	guid := inst.str("guid")
	for _, source := range []string{guid, inst.str("crn")} {
		res := e.do("alice", "POST", "/v2/resource_keys", map[string]any{"name": "creds", "source": source, "role": "Writer"}).want(t, http.StatusCreated)
		kguid := res.str("guid")
		wantCRN := strings.TrimSuffix(inst.str("crn"), "::") + ":resource-key:" + kguid
		if res.str("id") != wantCRN || res.str("crn") != wantCRN || res.str("source_crn") != inst.str("crn") ||
			res.str("role") != auth.RoleWriter || res.str("state") != "active" || res.str("url") != "/v2/resource_keys/"+kguid {
			t.Errorf("created key: %s", res.raw)
		}
		creds := res.body["credentials"].(map[string]any)
		if creds["apikey"] != "secret-for-"+kguid {
			t.Errorf("credentials %v", creds)
		}
		for _, id := range []string{kguid, escaped(wantCRN)} {
			got := e.do("alice", "GET", "/v2/resource_keys/"+id, nil).want(t, 200)
			if strings.Contains(got.raw, "secret-for") || got.body["credentials"].(map[string]any)["REDACTED"] != "REDACTED" {
				t.Errorf("GET shows the credentials again: %s", got.raw)
			}
		}
	}
	if n := e.es.count("Credentials", guid); n != 2 {
		t.Errorf("broker asked for credentials %d times", n)
	}
	list := e.do("alice", "GET", "/v2/resource_keys?source="+guid, nil).want(t, 200)
	if list.body["rows_count"] != 2.0 || strings.Contains(list.raw, "secret-for") {
		t.Errorf("list: %s", list.raw)
	}
	paged := e.do("alice", "GET", "/v2/resource_instances/"+guid+"/resource_keys?limit=1", nil).want(t, 200)
	next, _ := paged.body["next_url"].(string)
	if paged.body["rows_count"] != 1.0 || next == "" {
		t.Fatalf("first page: %s", paged.raw)
	}
	if rest := e.do("alice", "GET", next, nil).want(t, 200); rest.body["rows_count"] != 1.0 || rest.body["next_url"] != nil {
		t.Errorf("second page: %s", rest.raw)
	}
}

func TestResourceKeyRequestsAreChecked(t *testing.T) {
	e := newEnv(t)
	guid := e.createInstance("kp", kmsPlan, nil).str("guid")
	kguid := e.do("alice", "POST", "/v2/resource_keys", map[string]any{"name": "k", "source": guid}).want(t, 201).str("guid")
	if role := e.do("alice", "GET", "/v2/resource_keys/"+kguid, nil).str("role"); role != auth.RoleManager {
		t.Errorf("default role %q, want Key Protect's default, Manager", role)
	}
	for _, tc := range []struct {
		token, method, path string
		body                any
		status              int
		code                string
	}{
		{"alice", "POST", "/v2/resource_keys", map[string]any{"name": "k", "source": guid, "role": "Overlord"}, 400, "INVALID_ROLE"},
		{"alice", "POST", "/v2/resource_keys", map[string]any{"name": "k"}, 400, "MISSING_FIELD"},
		{"alice", "POST", "/v2/resource_keys", map[string]any{"name": "k", "source": "6f1bd0c4-1c9c-4c3a-9f4f-58f8d7a5a0b1"}, 404, "INSTANCE_NOT_FOUND"},
		{"alice", "POST", "/v2/resource_keys", map[string]any{"name": "k", "source": guid, "parameters": map[string]any{}}, 400, "BAD_BODY_ERR"},
		{"bob", "POST", "/v2/resource_keys", map[string]any{"name": "k", "source": guid}, 404, "INSTANCE_NOT_FOUND"},
		{"bob", "GET", "/v2/resource_keys/" + kguid, nil, 404, "KEY_NOT_FOUND"},
		{"bob", "DELETE", "/v2/resource_keys/" + kguid, nil, 404, "KEY_NOT_FOUND"},
		{"viewer", "POST", "/v2/resource_keys", map[string]any{"name": "k", "source": guid}, 403, "FORBIDDEN"},
		{"viewer", "DELETE", "/v2/resource_keys/" + kguid, nil, 403, "FORBIDDEN"},
		{"alice", "GET", "/v2/resource_keys/6f1bd0c4-1c9c-4c3a-9f4f-58f8d7a5a0b1", nil, 404, "KEY_NOT_FOUND"},
	} {
		res := e.do(tc.token, tc.method, tc.path, tc.body)
		if res.status != tc.status || res.errorCode() != tc.code {
			t.Errorf("%s %s %s: %d %s, want %d %s", tc.token, tc.method, tc.path, res.status, res.raw, tc.status, tc.code)
		}
	}
	if n := e.do("bob", "GET", "/v2/resource_keys", nil).want(t, 200).body["rows_count"]; n != 0.0 {
		t.Errorf("bob lists %v keys", n)
	}
	e.do("alice", "DELETE", "/v2/resource_keys/"+kguid, nil).want(t, http.StatusNoContent)
	if len(e.kms.revoked) != 1 || e.kms.revoked[0] != kguid {
		t.Errorf("revoked %v", e.kms.revoked)
	}
	if got := e.do("alice", "GET", "/v2/resource_keys/"+kguid, nil).want(t, 200); got.str("state") != "removed" || got.body["deleted_at"] == nil {
		t.Errorf("deleted key: %s", got.raw)
	}
	e.do("alice", "DELETE", "/v2/resource_keys/"+kguid, nil).want(t, http.StatusGone)
}

func TestDeletingAnInstanceWithKeysNeedsRecursive(t *testing.T) {
	e := newEnv(t)
	guid := e.createInstance("es", esPlan, nil).str("guid")
	kguid := e.do("alice", "POST", "/v2/resource_keys", map[string]any{"name": "k", "source": guid, "role": "Manager"}).want(t, 201).str("guid")
	res := e.do("alice", "DELETE", "/v2/resource_instances/"+guid, nil).want(t, http.StatusConflict)
	if res.errorCode() != "INSTANCE_HAS_KEYS" || e.es.count("Suspend", guid) != 0 {
		t.Errorf("delete with keys: %s, calls %v", res.raw, e.es.calls)
	}
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid+"?recursive=maybe", nil).want(t, 400)
	e.do("alice", "DELETE", "/v2/resource_instances/"+guid+"?recursive=true", nil).want(t, http.StatusAccepted)
	if got := e.do("alice", "GET", "/v2/resource_keys/"+kguid, nil).str("state"); got != "removed" {
		t.Errorf("key of the deleted instance is %s", got)
	}
	if len(e.es.revoked) != 1 {
		t.Errorf("credentials revoked: %v", e.es.revoked)
	}
	// No new keys for a deleted instance.
	e.do("alice", "POST", "/v2/resource_keys", map[string]any{"name": "k2", "source": guid}).want(t, http.StatusConflict)
}

func TestCredentialsAreViewableAgainByThoseWhoMayCreateThem(t *testing.T) {
	sealer, err := seal.New(seal.RandomKey())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, dir: t.TempDir(), dbURL: storetest.URL(t), clock: clock.NewFake(epoch), policies: newPolicies(), kms: newBroker(), es: newBroker(), sealer: sealer}
	e.start()
	t.Cleanup(e.shutdown)
	guid := e.createInstance("es", esPlan, nil).str("guid")
	created := e.do("alice", "POST", "/v2/resource_keys", map[string]any{"name": "app", "source": guid, "role": "Writer"}).want(t, http.StatusCreated)
	kguid, kcrn := created.str("guid"), created.str("crn")
	secret := "secret-for-" + kguid

	// An administrator sees them again, and the reading is audited.
	got := e.do("alice", "GET", "/v2/resource_keys/"+kguid, nil).want(t, 200)
	if got.body["credentials"].(map[string]any)["apikey"] != secret || got.body["onetime_credentials"] != false {
		t.Fatalf("GET by an administrator: %s", got.raw)
	}
	e.checkEvent(t, kcrn, wantEvent{action: "messagehub.key.read", outcome: "success", code: 200, initiator: "IBMid-alice"})

	// A Viewer may see the key, not its credentials.
	viewed := e.do("viewer", "GET", "/v2/resource_keys/"+kguid, nil).want(t, 200)
	if strings.Contains(viewed.raw, secret) || viewed.body["credentials"].(map[string]any)["REDACTED"] != "REDACTED" {
		t.Fatalf("GET by a viewer: %s", viewed.raw)
	}
	if n := len(e.events(accountA, "messagehub.key.read")); n != 1 {
		t.Errorf("%d key.read events, want only the administrator's", n)
	}

	// At rest they are sealed: the database holds no plain secret.
	var stored string
	if err := e.db.Read(context.Background(), func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT sealed_credentials FROM rc_resource_keys WHERE guid = ?`, kguid).Scan(&stored)
	}); err != nil {
		t.Fatal(err)
	}
	if stored == "" || strings.Contains(stored, secret) {
		t.Fatalf("stored credentials %q", stored)
	}

	// Deleted credentials are never shown again.
	e.do("alice", "DELETE", "/v2/resource_keys/"+kguid, nil).want(t, http.StatusNoContent)
	if gone := e.do("alice", "GET", "/v2/resource_keys/"+kguid, nil); strings.Contains(gone.raw, secret) {
		t.Fatalf("GET after delete: %s", gone.raw)
	}
}
