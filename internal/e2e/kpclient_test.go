package e2e

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"github.com/keyline/keyline/internal/client"
)

// kpClient is IBM's official Key Protect client pointed at Keyline, getting
// its tokens from Keyline's IAM with an API key, as it would from IBM Cloud.
func kpClient(t *testing.T, e *env, apikey, instance string) *kp.Client {
	t.Helper()
	kp.RetryMax, kp.RetryWaitMax = 0, 10*time.Millisecond
	c, err := kp.New(kp.ClientConfig{BaseURL: e.url, APIKey: apikey, TokenURL: e.url + "/identity/token", InstanceID: instance, Verbose: kp.VerboseFailOnly}, kp.DefaultTransport())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func kpStatus(err error) int {
	var ke *kp.Error
	if errors.As(err, &ke) {
		return ke.StatusCode
	}
	return 0
}

// TestOfficialClientAgainstTheWholeServer drives keyprotect-go-client v0.17.3
// through Keyline's real IAM: token exchange, key lifecycle, the error paths
// the client depends on, and a Reader who may look but not act.
func TestOfficialClientAgainstTheWholeServer(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	account, _ := admin.account()
	guid := admin.createInstance("kp", "kms", "tiered-pricing", "us-south", nil)["guid"].(string)
	ctx := context.Background()
	c := kpClient(t, e, adminKey, guid)

	key, err := c.CreateRootKey(ctx, "root", nil)
	if err != nil {
		t.Fatal(err)
	}
	dek := []byte(base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef")))
	wrapped, err := c.Wrap(ctx, key.ID, dek, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Rotate(ctx, key.ID, ""); err != nil {
		t.Fatal(err)
	}
	pt, rewrapped, err := c.UnwrapV2(ctx, key.ID, wrapped, nil)
	if err != nil || string(pt) != string(dek) || len(rewrapped) == 0 {
		t.Fatalf("unwrap of a pre-rotation ciphertext: %q %q %v", pt, rewrapped, err)
	}
	keys, err := c.GetKeys(ctx, 0, 0)
	if err != nil || len(keys.Keys) != 1 {
		t.Fatalf("GetKeys: %+v %v", keys, err)
	}

	// A second user with only Reader on this instance.
	sid := admin.must("POST", "/v1/serviceids", nil, map[string]any{"name": "auditor", "account_id": account})
	readerKey := admin.must("POST", "/v1/apikeys", nil, map[string]any{"name": "auditor-key", "iam_id": sid["iam_id"], "account_id": account})["apikey"].(string)
	admin.must("POST", "/v1/policies", nil, map[string]any{
		"type":      "access",
		"subjects":  []any{map[string]any{"attributes": []any{map[string]any{"name": "iam_id", "value": sid["iam_id"]}}}},
		"roles":     []any{map[string]any{"role_id": "crn:v1:bluemix:public:iam::::serviceRole:Reader"}},
		"resources": []any{map[string]any{"attributes": []any{map[string]any{"name": "accountId", "value": account}, map[string]any{"name": "serviceName", "value": "kms"}, map[string]any{"name": "serviceInstance", "value": guid}}}},
	})
	reader := kpClient(t, e, readerKey, guid)
	if _, err := reader.GetKeys(ctx, 0, 0); err != nil {
		t.Fatalf("a Reader cannot list keys: %v", err)
	}
	if _, err := reader.CreateRootKey(ctx, "nope", nil); kpStatus(err) != 403 {
		t.Fatalf("Reader create: %v, want 403", err)
	}
	if _, err := reader.Wrap(ctx, key.ID, dek, nil); kpStatus(err) != 403 {
		t.Fatalf("Reader wrap: %v, want 403", err)
	}
	if _, err := reader.DeleteKey(ctx, key.ID, kp.ReturnMinimal); kpStatus(err) != 403 {
		t.Fatalf("Reader delete: %v, want 403", err)
	}
	if err := reader.Rotate(ctx, key.ID, ""); kpStatus(err) != 403 || !strings.Contains(err.Error(), "Forbidden") && !strings.Contains(err.Error(), "403") {
		t.Fatalf("Reader rotate: %v, want 403", err)
	}

	// Delete, 410 on use, restore after 30 s, delete again, purge after 4 h, then 404.
	if _, err := c.DeleteKey(ctx, key.ID, kp.ReturnRepresentation); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wrap(ctx, key.ID, dek, nil); kpStatus(err) != 410 {
		t.Fatalf("wrap with a deleted key: %v, want 410", err)
	}
	e.clock.Advance(31 * time.Second)
	if _, err := c.RestoreKey(ctx, key.ID); err != nil {
		t.Fatalf("restore: %v", err)
	}
	if _, err := c.DeleteKey(ctx, key.ID, kp.ReturnMinimal); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PurgeKey(ctx, key.ID, kp.ReturnMinimal); kpStatus(err) != 409 {
		t.Fatalf("purge right after delete: %v, want 409", err)
	}
	e.clock.Advance(4*time.Hour + time.Minute)
	if _, err := c.PurgeKey(ctx, key.ID, kp.ReturnMinimal); kpStatus(err) != 401 {
		t.Fatalf("a token 4 hours old: %v, want 401", err)
	}
	c = kpClient(t, e, adminKey, guid) // a fresh token
	if _, err := c.PurgeKey(ctx, key.ID, kp.ReturnMinimal); err != nil {
		t.Fatalf("purge after 4 h: %v", err)
	}
	if _, err := c.GetKeyMetadata(ctx, key.ID); kpStatus(err) != 404 {
		t.Fatalf("a purged key: %v, want 404", err)
	}
	// The admin's token came from Keyline's IAM and every call is in the trail.
	admin = e.as(client.New(e.url, adminKey))
	page := admin.must("GET", "/v1/audit/events?action=kms.secrets.*&limit=100", nil, nil)
	s := dump(page)
	for _, action := range []string{"kms.secrets.create", "kms.secrets.wrap", "kms.secrets.rotate", "kms.secrets.unwrap", "kms.secrets.delete", "kms.secrets.restore", "kms.secrets.purge"} {
		if !strings.Contains(s, `"`+action+`"`) {
			t.Errorf("no %s event in the audit trail", action)
		}
	}
	if strings.Contains(s, readerKey) || strings.Contains(s, adminKey) || strings.Contains(s, string(dek)) {
		t.Fatal("a secret is in the audit trail")
	}
}
