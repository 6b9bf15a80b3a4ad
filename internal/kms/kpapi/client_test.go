package kpapi_test

import (
	"bytes"
	"encoding/base64"
	"net/url"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"github.com/keyline/keyline/internal/kms"
)

func b64(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b)) }

func TestOfficialClientRootKeyLifecycle(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	ctx := e.ctx

	key := must[*kp.Key](t)(c.CreateRootKey(ctx, "orders-root", nil))
	if key.ID == "" || key.Extractable || key.State != kms.StateActive || key.Deleted == nil || *key.Deleted {
		t.Fatalf("created key = %+v", key)
	}
	if key.LastUpdateDate != nil || key.LastRotateDate != nil {
		t.Fatalf("a fresh key must not carry lastUpdateDate/lastRotateDate: %+v", key)
	}
	if key.CRN != "crn:v1:bluemix:public:kms:us-south:a/"+account+":"+instance+":key:"+key.ID {
		t.Fatalf("crn = %s", key.CRN)
	}
	got := must[*kp.Key](t)(c.GetKey(ctx, key.ID))
	if got.Payload != "" {
		t.Fatal("GET of a root key returned its material")
	}

	dek := bytes.Repeat([]byte{7}, 32)
	aad := []string{"deployment-1", "disk"}
	wrapped := must[[]byte](t)(c.Wrap(ctx, key.ID, b64(dek), &aad))
	pt := must[[]byte](t)(c.Unwrap(ctx, key.ID, wrapped, &aad))
	if !bytes.Equal(pt, b64(dek)) {
		t.Fatalf("unwrap = %s", pt)
	}
	if _, err := c.Unwrap(ctx, key.ID, wrapped, &[]string{"deployment-2", "disk"}); err == nil {
		t.Fatal("unwrap with other AAD succeeded")
	} else {
		wantErr(t, err, 422, "UNPROCESSABLE_CIPHERTEXT_ERR")
	}
	genPT, genCT, err := c.WrapCreateDEK(ctx, key.ID, nil)
	ok(t, err)
	if raw, _ := base64.StdEncoding.DecodeString(string(genPT)); len(raw) != 32 {
		t.Fatalf("generated DEK has %d bytes", len(raw))
	}

	ok(t, c.Rotate(ctx, key.ID, ""))
	wantErr(t, c.Rotate(ctx, key.ID, ""), 409, "KEY_ROTATION_NOT_PERMITTED")
	rotated := must[*kp.Key](t)(c.GetKeyMetadata(ctx, key.ID))
	if rotated.KeyVersion.ID == key.KeyVersion.ID || rotated.LastRotateDate == nil || rotated.LastUpdateDate == nil {
		t.Fatalf("rotation did not show: %+v", rotated)
	}
	// A ciphertext of the old version unwraps and comes back rewrapped.
	pt2, rewrapped, err := c.UnwrapV2(ctx, key.ID, genCT, nil)
	ok(t, err)
	if !bytes.Equal(pt2, genPT) || len(rewrapped) == 0 {
		t.Fatalf("unwrap of old version: pt equal %v, rewrapped %q", bytes.Equal(pt2, genPT), rewrapped)
	}
	_, again, err := c.UnwrapV2(ctx, key.ID, rewrapped, nil)
	ok(t, err)
	if len(again) != 0 {
		t.Fatal("unwrap of a latest-version ciphertext returned a rewrap")
	}
	versions := must[*kp.KeyVersions](t)(c.ListKeyVersions(ctx, key.ID, nil))
	if len(versions.KeyVersion) != 2 || versions.KeyVersion[0].ID != rotated.KeyVersion.ID {
		t.Fatalf("versions = %+v", versions.KeyVersion)
	}
	e.clock.Advance(time.Hour)
	ok(t, c.Rotate(ctx, key.ID, ""))

	ok(t, c.DisableKey(ctx, key.ID))
	_, err = c.Wrap(ctx, key.ID, b64(dek), nil)
	wantErr(t, err, 409, "KEY_ACTION_INVALID_STATE_ERR")
	ok(t, c.EnableKey(ctx, key.ID))
	must[[]byte](t)(c.Wrap(ctx, key.ID, b64(dek), nil))

	del := must[*kp.Key](t)(c.DeleteKey(ctx, key.ID, kp.ReturnRepresentation))
	if del.State != kms.StateDestroyed || del.Deleted == nil || !*del.Deleted || del.PurgeAllowedFrom == nil || del.PurgeScheduledOn == nil {
		t.Fatalf("deleted key = %+v", del)
	}
	if d := del.PurgeScheduledOn.Sub(*del.PurgeAllowedFrom); d != 2156*time.Hour {
		t.Fatalf("purge window = %v", d)
	}
	_, err = c.Wrap(ctx, key.ID, b64(dek), nil)
	wantErr(t, err, 410, "KEY_DELETED_ERR")
	_, err = c.DeleteKey(ctx, key.ID, kp.ReturnMinimal)
	wantErr(t, err, 410, "KEY_DELETED_ERR")
	_, err = c.RestoreKey(ctx, key.ID)
	wantErr(t, err, 409, "REQ_TOO_EARLY_ERR")
	e.clock.Advance(time.Minute)
	restored := must[*kp.Key](t)(c.RestoreKey(ctx, key.ID))
	if restored.State != kms.StateActive {
		t.Fatalf("restored state = %d", restored.State)
	}
	pt3 := must[[]byte](t)(c.Unwrap(ctx, key.ID, wrapped, &aad))
	if !bytes.Equal(pt3, b64(dek)) {
		t.Fatal("a restored key does not unwrap what it wrapped before deletion")
	}

	_, err = c.DeleteKey(ctx, key.ID, kp.ReturnMinimal)
	ok(t, err)
	_, err = e.client(purger).PurgeKey(ctx, key.ID, kp.ReturnMinimal)
	wantErr(t, err, 409, "REQ_TOO_EARLY_ERR")
	e.clock.Advance(4 * time.Hour)
	_, err = c.PurgeKey(ctx, key.ID, kp.ReturnMinimal)
	wantErr(t, err, 403, "")
	_, err = e.client(purger).PurgeKey(ctx, key.ID, kp.ReturnMinimal)
	ok(t, err)
	_, err = c.GetKey(ctx, key.ID)
	wantErr(t, err, 404, "KEY_NOT_FOUND_ERR")
	_, err = c.Unwrap(ctx, key.ID, wrapped, &aad)
	wantErr(t, err, 404, "KEY_NOT_FOUND_ERR")
}

func TestOfficialClientStandardKeys(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	ctx := e.ctx
	gen := must[*kp.Key](t)(c.CreateStandardKey(ctx, "generated-standard", nil))
	got := must[*kp.Key](t)(c.GetKey(ctx, gen.ID))
	if raw, _ := base64.StdEncoding.DecodeString(got.Payload); len(raw) != 32 || !got.Extractable {
		t.Fatalf("standard key payload has %d bytes", len(raw))
	}
	secret := base64.StdEncoding.EncodeToString([]byte("a password that is not a key"))
	imp := must[*kp.Key](t)(c.CreateImportedStandardKey(ctx, "imported-standard", nil, secret))
	if !imp.Imported || imp.Payload != "" {
		t.Fatalf("create returned %+v", imp)
	}
	if got := must[*kp.Key](t)(c.GetKey(ctx, imp.ID)); got.Payload != secret {
		t.Fatalf("payload = %q", got.Payload)
	}
	if md := must[*kp.Key](t)(c.GetKeyMetadata(ctx, imp.ID)); md.Payload != "" {
		t.Fatal("metadata carries the payload")
	}
	_, err := c.Wrap(ctx, imp.ID, b64([]byte("0123456789abcdef")), nil)
	wantErr(t, err, 400, "KEY_ROOT_REQ_ERR")
	wantErr(t, c.Rotate(ctx, imp.ID, ""), 400, "KEY_ROOT_REQ_ERR")
	wantErr(t, c.DisableKey(ctx, imp.ID), 400, "KEY_ROOT_REQ_ERR")
	_, err = c.CreateImportedStandardKey(ctx, "bad", nil, "not base64!")
	wantErr(t, err, 400, "INVALID_FIELD_ERR")
	_, err = c.SetRotationPolicy(ctx, imp.ID, 3)
	wantErr(t, err, 400, "KEY_ROOT_REQ_ERR")
}

func TestOfficialClientImportedRootKeys(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	ctx := e.ctx
	material := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x42}, 32))
	key := must[*kp.Key](t)(c.CreateImportedRootKey(ctx, "byok-plain", nil, material, "", ""))
	if !key.Imported {
		t.Fatal("imported flag not set")
	}
	wrapped := must[[]byte](t)(c.Wrap(ctx, key.ID, b64([]byte("dek-dek-dek-dek!")), nil))
	wantErr(t, c.Rotate(ctx, key.ID, ""), 400, "KEY_PAYLOAD_REQ_ERR")
	ok(t, c.Rotate(ctx, key.ID, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x43}, 32))))
	if pt := must[[]byte](t)(c.Unwrap(ctx, key.ID, wrapped, nil)); string(pt) != string(b64([]byte("dek-dek-dek-dek!"))) {
		t.Fatal("old version no longer unwraps after an imported rotation")
	}
	gen := must[*kp.Key](t)(c.CreateRootKey(ctx, "generated", nil))
	wantErr(t, c.Rotate(ctx, gen.ID, material), 400, "INVALID_QUERY_PARAM_ERR")
	_, err := c.CreateImportedRootKey(ctx, "short", nil, base64.StdEncoding.EncodeToString([]byte("short")), "", "")
	wantErr(t, err, 400, "INVALID_FIELD_ERR")

	// Secure import through the import token.
	_, err = c.GetImportTokenTransportKey(ctx)
	wantErr(t, err, 404, "IMPORT_TOKEN_NOT_FOUND_ERR")
	meta := must[*kp.ImportTokenMetadata](t)(c.CreateImportToken(ctx, 600, 2))
	if meta.RemainingRetrievals != 2 || meta.MaxAllowedRetrievals != 2 {
		t.Fatalf("token = %+v", meta)
	}
	tok := must[*kp.ImportTokenKeyResponse](t)(c.GetImportTokenTransportKey(ctx))
	secret := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x99}, 32))
	encKey, err := kp.EncryptKey(secret, tok.Payload)
	ok(t, err)
	encNonce, iv, err := kp.EncryptNonce(secret, tok.Nonce, "")
	ok(t, err)
	secure := must[*kp.Key](t)(c.CreateImportedRootKey(ctx, "byok-secure", nil, encKey, encNonce, iv))
	w := must[[]byte](t)(c.Wrap(ctx, secure.ID, b64([]byte("sixteen byte dek")), nil))
	must[[]byte](t)(c.Unwrap(ctx, secure.ID, w, nil))
	otherNonce, iv2, err := kp.EncryptNonce(secret, base64.StdEncoding.EncodeToString([]byte("12345678")), "")
	ok(t, err)
	_, err = c.CreateImportedRootKey(ctx, "bad-nonce", nil, encKey, otherNonce, iv2)
	wantErr(t, err, 400, "INCORRECT_NONCE_ERR")
	must[*kp.ImportTokenKeyResponse](t)(c.GetImportTokenTransportKey(ctx))
	_, err = c.GetImportTokenTransportKey(ctx)
	wantErr(t, err, 409, "IMPORT_TOKEN_EXPIRED_ERR")
	e.clock.Advance(11 * time.Minute)
	_, err = c.CreateImportedRootKey(ctx, "late", nil, encKey, encNonce, iv)
	wantErr(t, err, 409, "IMPORT_TOKEN_EXPIRED_ERR")
}

func TestCreateKeyWithOptions(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	exp := e.clock.Now().Add(48 * time.Hour)
	k := must[*kp.Key](t)(c.CreateKeyWithOptions(e.ctx, "with-options", false, kp.WithDescription("customer data"),
		kp.WithTags([]string{"prod", "eu"}), kp.WithAliases([]string{"opt-alias"}), kp.WithExpiration(&exp)))
	got := must[*kp.Key](t)(c.GetKeyMetadata(e.ctx, "opt-alias"))
	if got.ID != k.ID || got.Description != "customer data" || len(got.Tags) != 2 || got.Expiration == nil || !got.Expiration.Equal(exp) {
		t.Fatalf("key = %+v", got)
	}
	// Secure import with the SHA-1 variant of RSA-OAEP.
	must[*kp.ImportTokenMetadata](t)(c.CreateImportToken(e.ctx, 600, 1))
	tok := must[*kp.ImportTokenKeyResponse](t)(c.GetImportTokenTransportKey(e.ctx))
	secret := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x17}, 16))
	enc, err := kp.EncryptKeyWithSHA1(secret, tok.Payload)
	ok(t, err)
	nonce, iv, err := kp.EncryptNonce(secret, tok.Nonce, "")
	ok(t, err)
	imp := must[*kp.Key](t)(c.CreateKeyWithOptions(e.ctx, "sha1-import", false, kp.WithPayload(enc, &nonce, &iv, true)))
	w := must[[]byte](t)(c.Wrap(e.ctx, imp.ID, b64([]byte("0123456789abcdef")), nil))
	must[[]byte](t)(c.Unwrap(e.ctx, imp.ID, w, nil))
}

func TestReaderIsRefusedCreateDeleteWrap(t *testing.T) {
	e := newEnv(t)
	key := must[*kp.Key](t)(e.client(manager).CreateRootKey(e.ctx, "reader-test", nil))
	r := e.client(reader)
	_, err := r.CreateRootKey(e.ctx, "nope", nil)
	wantErr(t, err, 403, "")
	_, err = r.Wrap(e.ctx, key.ID, b64([]byte("0123456789abcdef")), nil)
	wantErr(t, err, 403, "")
	_, err = r.DeleteKey(e.ctx, key.ID, kp.ReturnMinimal)
	wantErr(t, err, 403, "")
	// A reader may list and read metadata, but not a key's payload.
	if keys := must[*kp.Keys](t)(r.GetKeys(e.ctx, 0, 0)); len(keys.Keys) != 1 || keys.Keys[0].Payload != "" {
		t.Fatalf("reader lists %d keys", len(keys.Keys))
	}
	must[*kp.Key](t)(r.GetKeyMetadata(e.ctx, key.ID))
	must[*kp.Key](t)(r.GetKey(e.ctx, key.ID))
	std := must[*kp.Key](t)(e.client(manager).CreateStandardKey(e.ctx, "secret", nil))
	_, err = r.GetKey(e.ctx, std.ID)
	wantErr(t, err, 403, "")
	// The outsider has no policy at all: it cannot even tell whether a key exists.
	_, err = e.client(outsider).GetKeyMetadata(e.ctx, "00000000-0000-4000-8000-000000000000")
	wantErr(t, err, 403, "")
	_, err = e.client(writer).DeleteKey(e.ctx, key.ID, kp.ReturnMinimal)
	wantErr(t, err, 403, "")
}

func TestUnauthenticatedAndForeignInstanceAreRefused(t *testing.T) {
	e := newEnv(t)
	_, err := e.client("no-such-token").GetKeys(e.ctx, 0, 0)
	wantErr(t, err, 401, "UNAUTHORIZED_ERR")
	if ke, isKP := err.(*kp.Error); !isKP || ke.Message != "Unauthorized: The user does not have access to the specified resource" {
		t.Fatalf("401 message = %v", err)
	}
	for _, guid := range []string{other, "does-not-exist"} {
		c, _ := kp.New(kp.ClientConfig{BaseURL: e.srv.URL, Authorization: "Bearer " + manager, InstanceID: guid}, kp.DefaultTransport())
		_, err = c.GetKeys(e.ctx, 0, 0)
		wantErr(t, err, 401, "UNAUTHORIZED_ERR")
	}
}

func TestRegisteredKeyDeletionNeedsForceAndRespectsRetention(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "deployments", nil))
	prevent, allow := true, false
	dep1 := "crn:v1:bluemix:public:messagehub:us-south:a/" + account + ":dep-0001::"
	dep2 := "crn:v1:bluemix:public:messagehub:us-south:a/" + account + ":dep-0002::"
	must[kms.Registration](t)(e.svc.CreateRegistration(asService(), instance, key.ID, dep1, kms.RegistrationInput{PreventKeyDeletion: &allow}))

	regs := must[*kmsRegs](t)(listRegs(c, e, key.ID, ""))
	if len(regs.Registrations) != 1 || regs.Registrations[0].ResourceCrn != dep1 || regs.Registrations[0].KeyVersion.ID != key.KeyVersion.ID {
		t.Fatalf("registrations = %+v", regs.Registrations)
	}
	_, err := c.DeleteKey(e.ctx, key.ID, kp.ReturnMinimal)
	wantErr(t, err, 409, "PROTECTED_RESOURCE_ERR")

	must[kms.Registration](t)(e.svc.CreateRegistration(asService(), instance, key.ID, dep2, kms.RegistrationInput{PreventKeyDeletion: &prevent}))
	all := must[*kmsRegs](t)(listRegs(c, e, "", "crn:v1:bluemix:public:messagehub:us-south:a/"+account+":dep-0002::"))
	if len(all.Registrations) != 1 || !all.Registrations[0].PreventKeyDeletion {
		t.Fatalf("pattern query = %+v", all.Registrations)
	}
	wild := must[*kmsRegs](t)(listRegs(c, e, key.ID, "crn:v1:bluemix:public:messagehub:us-south:a/"+account+":*::"))
	if len(wild.Registrations) != 2 {
		t.Fatalf("wildcard query found %d", len(wild.Registrations))
	}
	_, err = c.DeleteKey(e.ctx, key.ID, kp.ReturnMinimal, kp.ForceOpt{Force: true})
	wantErr(t, err, 409, "PREV_KEY_DEL_ERR")
	ok(t, e.svc.DeleteRegistration(asService(), instance, key.ID, dep2))
	_, err = c.DeleteKey(e.ctx, key.ID, kp.ReturnMinimal, kp.ForceOpt{Force: true})
	ok(t, err)
	// Registrations stay readable until purge.
	if regs := must[*kmsRegs](t)(listRegs(c, e, key.ID, "")); len(regs.Registrations) != 1 {
		t.Fatalf("after force delete: %d registrations", len(regs.Registrations))
	}
}

type kmsRegs = struct {
	Metadata      kp.KeysMetadata   `json:"metadata"`
	Registrations []kp.Registration `json:"resources"`
}

// listRegs calls the client's ListRegistrations (its result type is unexported).
func listRegs(c *kp.Client, e *env, keyID, crn string) (*kmsRegs, error) {
	r, err := c.ListRegistrations(e.ctx, keyID, crn)
	if err != nil {
		return nil, err
	}
	out := kmsRegs{Metadata: r.Metadata, Registrations: r.Registrations}
	return &out, nil
}

func TestDualAuthorizationDeletion(t *testing.T) {
	e := newEnv(t)
	c1, c2 := e.client(manager), e.client(manager2)
	key := must[*kp.Key](t)(c1.CreateRootKey(e.ctx, "dual", nil))
	wantErr(t, c1.InitiateDualAuthDelete(e.ctx, key.ID), 409, "NOT_DUAL_AUTH_ERR")
	must[*kp.Policy](t)(c1.SetDualAuthDeletePolicy(e.ctx, key.ID, true))
	_, err := c1.SetDualAuthDeletePolicy(e.ctx, key.ID, false)
	wantErr(t, err, 400, "")
	_, err = c1.DeleteKey(e.ctx, key.ID, kp.ReturnMinimal)
	wantErr(t, err, 409, "AUTHORIZATIONS_NOT_MET")
	ok(t, c1.InitiateDualAuthDelete(e.ctx, key.ID))
	_, err = c1.DeleteKey(e.ctx, key.ID, kp.ReturnMinimal)
	wantErr(t, err, 409, "AUTHORIZATIONS_NOT_MET")
	e.clock.Advance(7*24*time.Hour + time.Second)
	_, err = c2.DeleteKey(e.ctx, key.ID, kp.ReturnMinimal)
	wantErr(t, err, 409, "AUTHORIZATIONS_NOT_MET")
	ok(t, c1.InitiateDualAuthDelete(e.ctx, key.ID))
	ok(t, c1.CancelDualAuthDelete(e.ctx, key.ID))
	_, err = c2.DeleteKey(e.ctx, key.ID, kp.ReturnMinimal)
	wantErr(t, err, 409, "AUTHORIZATIONS_NOT_MET")
	ok(t, c1.InitiateDualAuthDelete(e.ctx, key.ID))
	_, err = c2.DeleteKey(e.ctx, key.ID, kp.ReturnMinimal)
	ok(t, err)
}

func TestPoliciesThroughOfficialClient(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "policies", nil))
	if p := must[*kp.Policy](t)(c.GetRotationPolicy(e.ctx, key.ID)); p != nil {
		t.Fatalf("fresh key has rotation policy %+v", p)
	}
	p := must[*kp.Policy](t)(c.SetRotationPolicy(e.ctx, key.ID, 3, false))
	if p.Rotation == nil || p.Rotation.Interval != 3 || p.Rotation.Enabled == nil || *p.Rotation.Enabled {
		t.Fatalf("policy = %+v", p.Rotation)
	}
	p = must[*kp.Policy](t)(c.EnableRotationPolicy(e.ctx, key.ID))
	if p.Rotation.Interval != 3 || !*p.Rotation.Enabled {
		t.Fatalf("enabled policy = %+v", p.Rotation)
	}
	_, err := c.SetRotationPolicy(e.ctx, key.ID, 0)
	wantErr(t, err, 400, "INVALID_FIELD_ERR")
	_, err = c.SetRotationPolicy(e.ctx, key.ID, 13)
	wantErr(t, err, 400, "INVALID_FIELD_ERR")
	// The deprecated single-policy calls read and write the rotation policy.
	old := must[*kp.Policy](t)(c.SetPolicy(e.ctx, key.ID, kp.ReturnRepresentation, 4))
	if old.Rotation == nil || old.Rotation.Interval != 4 {
		t.Fatalf("SetPolicy = %+v", old)
	}
	if got := must[*kp.Policy](t)(c.GetPolicy(e.ctx, key.ID)); got.Rotation == nil || got.Rotation.Interval != 4 || got.CRN != key.CRN {
		t.Fatalf("GetPolicy = %+v", got)
	}
	ps := must[[]kp.Policy](t)(c.SetPolicies(e.ctx, key.ID, true, 2, true, true))
	if len(ps) != 2 {
		t.Fatalf("SetPolicies returned %d", len(ps))
	}

	ok(t, c.SetDualAuthInstancePolicy(e.ctx, true))
	interval := 2
	ok(t, c.SetRotationInstancePolicy(e.ctx, true, &interval))
	ip := must[[]kp.InstancePolicy](t)(c.GetInstancePolicies(e.ctx))
	if len(ip) != 2 {
		t.Fatalf("instance policies = %+v", ip)
	}
	k2 := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "inherits", nil))
	if md := must[*kp.Key](t)(c.GetKeyMetadata(e.ctx, k2.ID)); md.DualAuthDelete == nil || md.DualAuthDelete.Enabled == nil || !*md.DualAuthDelete.Enabled {
		t.Fatalf("new key did not inherit dual auth: %+v", md.DualAuthDelete)
	}
	if rp := must[*kp.Policy](t)(c.GetRotationPolicy(e.ctx, k2.ID)); rp == nil || rp.Rotation.Interval != 2 {
		t.Fatalf("new key did not inherit rotation: %+v", rp)
	}
	// Overrides replace the instance policies: none given, none set.
	k3 := must[*kp.Key](t)(c.CreateRootKeyWithPolicyOverrides(e.ctx, "overrides", nil, nil, kp.Policy{}))
	if ps := must[[]kp.Policy](t)(c.GetPolicies(e.ctx, k3.ID)); len(ps) != 0 {
		t.Fatalf("override key has policies %+v", ps)
	}
	ok(t, c.SetKeyCreateImportAccessInstancePolicy(e.ctx, true, map[string]bool{"CreateRootKey": false}))
	_, err = c.CreateRootKey(e.ctx, "forbidden", nil)
	wantErr(t, err, 409, "KEY_CREATE_IMPORT_ACCESS_ERR")
	must[*kp.Key](t)(c.CreateStandardKey(e.ctx, "still-allowed", nil))
	ok(t, c.SetAllowedIPInstancePolicy(e.ctx, true, []string{"10.0.0.0/8"}))
	if port := must[int](t)(c.GetAllowedIPPrivateNetworkPort(e.ctx)); port == 0 {
		t.Fatal("no private port for an allowedIP instance")
	}
}

func TestKeyRingsAndAliases(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	ok(t, c.CreateKeyRing(e.ctx, "payments"))
	wantErr(t, c.CreateKeyRing(e.ctx, "payments"), 409, "")
	ringed, _ := kp.New(kp.ClientConfig{BaseURL: e.srv.URL, Authorization: "Bearer " + manager, InstanceID: instance, KeyRing: "payments"}, kp.DefaultTransport())
	key := must[*kp.Key](t)(ringed.CreateRootKey(e.ctx, "ring-key", nil))
	if key.KeyRingID != "payments" {
		t.Fatalf("ring = %q", key.KeyRingID)
	}
	rings := must[*kp.KeyRings](t)(c.GetKeyRings(e.ctx))
	if len(rings.KeyRings) != 2 || rings.KeyRings[0].ID != "default" {
		t.Fatalf("rings = %+v", rings.KeyRings)
	}
	wantErr(t, c.DeleteKeyRing(e.ctx, "payments"), 409, "KEY_RING_NOT_EMPTY_ERR")
	moved := must[*kp.Key](t)(c.SetKeyRing(e.ctx, key.ID, "default"))
	if moved.KeyRingID != "default" {
		t.Fatalf("moved ring = %q", moved.KeyRingID)
	}
	ok(t, c.DeleteKeyRing(e.ctx, "payments", kp.WithForce(true)))

	alias := must[*kp.KeyAlias](t)(c.CreateKeyAlias(e.ctx, "orders-key", key.ID))
	if alias.KeyID != key.ID || alias.Alias != "orders-key" {
		t.Fatalf("alias = %+v", alias)
	}
	byAlias := must[*kp.Key](t)(c.GetKeyMetadata(e.ctx, "orders-key"))
	if byAlias.ID != key.ID || len(byAlias.Aliases) != 1 {
		t.Fatalf("by alias = %+v", byAlias)
	}
	w := must[[]byte](t)(c.Wrap(e.ctx, "orders-key", b64([]byte("0123456789abcdef")), nil))
	must[[]byte](t)(c.Unwrap(e.ctx, key.ID, w, nil))
	_, err := c.CreateKeyAlias(e.ctx, "registrations", key.ID)
	wantErr(t, err, 400, "INVALID_FIELD_ERR")
	_, err = c.CreateKeyAlias(e.ctx, key.ID, key.ID)
	wantErr(t, err, 400, "INVALID_FIELD_ERR")
	other := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "other", nil))
	_, err = c.CreateKeyAlias(e.ctx, "orders-key", other.ID)
	wantErr(t, err, 409, "")
	ok(t, c.DeleteKeyAlias(e.ctx, "orders-key", key.ID))
	_, err = c.GetKeyMetadata(e.ctx, "orders-key")
	wantErr(t, err, 404, "KEY_NOT_FOUND_ERR")
}

func TestListKeysFilters(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	a := must[*kp.Key](t)(c.CreateKeyWithAliases(e.ctx, "alpha", nil, false, []string{"alpha-alias"}))
	e.clock.Advance(time.Minute)
	b := must[*kp.Key](t)(c.CreateStandardKey(e.ctx, "bravo", nil))
	e.clock.Advance(time.Minute)
	d := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "delta", nil))
	ok(t, c.DisableKey(e.ctx, d.ID))
	gone := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "gone", nil))
	_, err := c.DeleteKey(e.ctx, gone.ID, kp.ReturnMinimal)
	ok(t, err)

	ids := func(ks *kp.Keys) []string {
		var out []string
		for _, k := range ks.Keys {
			out = append(out, k.Name)
		}
		return out
	}
	tru, fal := true, false
	lim, off := uint32(1), uint32(1)
	sortDesc, search, notSearch := "-creationDate", "alias:alpha", "not:name:alpha"
	filter := `creationDate=gt:"` + a.CreationDate.Format(time.RFC3339) + `"`
	cases := []struct {
		name string
		opts kp.ListKeysOptions
		want []string
	}{
		{"default hides destroyed", kp.ListKeysOptions{Sort: &sortDesc}, []string{"delta", "bravo", "alpha"}},
		{"destroyed on request", kp.ListKeysOptions{State: []kp.KeyState{kp.Destroyed}}, []string{"gone"}},
		{"suspended", kp.ListKeysOptions{State: []kp.KeyState{kp.Suspended}}, []string{"delta"}},
		{"standard only", kp.ListKeysOptions{Extractable: &tru}, []string{"bravo"}},
		{"root only sorted", kp.ListKeysOptions{Extractable: &fal, Sort: &sortDesc}, []string{"delta", "alpha"}},
		{"alias search", kp.ListKeysOptions{Search: &search}, []string{"alpha"}},
		{"not name search", kp.ListKeysOptions{Search: &notSearch, Sort: &sortDesc}, []string{"delta", "bravo"}},
		{"limit offset", kp.ListKeysOptions{Sort: &sortDesc, Limit: &lim, Offset: &off}, []string{"bravo"}},
		{"filter dates", kp.ListKeysOptions{Filter: &filter, Sort: &sortDesc}, []string{"delta", "bravo"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := ids(must[*kp.Keys](t)(c.ListKeys(e.ctx, &tc.opts)))
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	bad := "bogus"
	_, err = c.ListKeys(e.ctx, &kp.ListKeysOptions{Sort: &bad})
	wantErr(t, err, 400, "INVALID_QUERY_PARAM_ERR")
	_ = b
	_ = url.Values{}
}
