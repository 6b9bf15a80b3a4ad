package kpapi_test

import (
	"bytes"
	"encoding/base64"
	"testing"

	kp "github.com/IBM/keyprotect-go-client"
)

// TestRemainingClientCalls drives the client calls the other tests do not.
func TestRemainingClientCalls(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	ctx := e.ctx
	tru, fal := true, false
	three := 3
	rootMaterial := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x21}, 32))

	// Create variants, with and without policy overrides.
	withPol := kp.Policy{Rotation: &kp.Rotation{Enabled: &tru, Interval: 3}, DualAuth: &kp.DualAuth{Enabled: &tru}}
	k1 := must[*kp.Key](t)(c.CreateRootKeyWithPolicyOverrides(ctx, "ovr-root", nil, []string{"ovr-alias"}, withPol))
	if rp := must[*kp.Policy](t)(c.GetRotationPolicy(ctx, k1.ID)); rp == nil || rp.Rotation.Interval != 3 || !*rp.Rotation.Enabled {
		t.Fatalf("override rotation = %+v", rp)
	}
	if dp := must[*kp.Policy](t)(c.GetDualAuthDeletePolicy(ctx, k1.ID)); dp == nil || !*dp.DualAuth.Enabled {
		t.Fatalf("override dual auth = %+v", dp)
	}
	p := must[*kp.Policy](t)(c.DisableRotationPolicy(ctx, k1.ID))
	if *p.Rotation.Enabled || p.Rotation.Interval != 3 {
		t.Fatalf("disabled rotation = %+v", p.Rotation)
	}
	_, err := c.CreateStandardKeyWithPolicyOverrides(ctx, "ovr-std", nil, nil, kp.Policy{Rotation: &kp.Rotation{Enabled: &tru, Interval: 1}})
	wantErr(t, err, 400, "KEY_ROOT_REQ_ERR")
	must[*kp.Key](t)(c.CreateStandardKeyWithPolicyOverrides(ctx, "ovr-std", nil, nil, kp.Policy{DualAuth: &kp.DualAuth{Enabled: &fal}}))
	must[*kp.Key](t)(c.CreateImportedRootKeyWithPolicyOverrides(ctx, "ovr-imp-root", nil, rootMaterial, "", "", nil, kp.Policy{}))
	must[*kp.Key](t)(c.CreateImportedStandardKeyWithPolicyOverrides(ctx, "ovr-imp-std", nil, rootMaterial, nil, kp.Policy{}))
	must[*kp.Key](t)(c.CreateImportedKeyWithAliases(ctx, "imp-alias", nil, rootMaterial, "", "", false, []string{"imp-a1", "imp-a2"}))
	must[*kp.Key](t)(c.CreateKeyWithPolicyOverridesWithOptions(ctx, "ovr-opts", false, kp.Policy{}, kp.WithDescription("d")))
	must[*kp.Key](t)(c.CreateImportedKey(ctx, "imp-generic", nil, rootMaterial, "", "", false))
	must[*kp.ImportTokenMetadata](t)(c.CreateImportToken(ctx, 300, 1))
	tok := must[*kp.ImportTokenKeyResponse](t)(c.GetImportTokenTransportKey(ctx))
	enc, err := kp.EncryptKeyWithSHA1(rootMaterial, tok.Payload)
	ok(t, err)
	nonce, iv, err := kp.EncryptNonce(rootMaterial, tok.Nonce, "")
	ok(t, err)
	must[*kp.Key](t)(c.CreateImportedKeyWithSHA1(ctx, "imp-sha1", nil, enc, nonce, iv, false, nil))
	must[*kp.Key](t)(c.CreateImportedKeyWithPolicyOverridesWithSHA1(ctx, "imp-sha1-ovr", nil, enc, nonce, iv, false, nil, kp.Policy{}))

	// V2 key actions.
	gen := must[*kp.KeyActionResponse](t)(c.WrapCreateDEKV2(ctx, k1.ID, nil))
	if gen.PlainText == "" || gen.CipherText == "" || gen.KeyVersion == nil || gen.KeyVersion.ID != k1.KeyVersion.ID {
		t.Fatalf("WrapCreateDEKV2 = %+v", gen)
	}
	w := must[*kp.KeyActionResponse](t)(c.WrapV2(ctx, k1.ID, []byte(gen.PlainText), nil))
	if w.PlainText != "" || w.CipherText == "" {
		t.Fatalf("WrapV2 = %+v", w)
	}
	ok(t, c.RotateV2(ctx, k1.ID, nil))
	payload := kp.NewKeyPayload(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x22}, 32)), "", "")
	ok(t, c.RotateV2(ctx, "imp-a1", &payload))

	// Instance policies, one by one and all at once.
	ok(t, c.SetAllowedNetworkInstancePolicy(ctx, true, "private-only"))
	ok(t, c.SetMetricsInstancePolicy(ctx, true))
	ok(t, c.SetRotationInstancePolicy(ctx, true, &three))
	ok(t, c.SetInstancePolicies(ctx, kp.MultiplePolicies{DualAuthDelete: &kp.BasicPolicyData{Enabled: false},
		Metrics: &kp.BasicPolicyData{Enabled: false}, AllowedNetwork: &kp.AllowedNetworkPolicyData{Enabled: true, Network: "public-and-private"},
		Rotation: &kp.RotationPolicyData{Enabled: false}}))
	if ip := must[*kp.InstancePolicy](t)(c.GetAllowedNetworkInstancePolicy(ctx)); ip == nil || *ip.PolicyData.Attributes.AllowedNetwork != "public-and-private" {
		t.Fatalf("allowed network = %+v", ip)
	}
	if ip := must[*kp.InstancePolicy](t)(c.GetMetricsInstancePolicy(ctx)); ip == nil || *ip.PolicyData.Enabled {
		t.Fatalf("metrics = %+v", ip)
	}
	if ip := must[*kp.InstancePolicy](t)(c.GetRotationInstancePolicy(ctx)); ip == nil || *ip.PolicyData.Enabled {
		t.Fatalf("rotation = %+v", ip)
	}
	if ip := must[*kp.InstancePolicy](t)(c.GetDualAuthInstancePolicy(ctx)); ip == nil || *ip.PolicyData.Enabled {
		t.Fatalf("dual auth = %+v", ip)
	}
	// The policy is enforced: the test client (127.0.0.1) must be inside it.
	ok(t, c.SetAllowedIPInstancePolicy(ctx, true, []string{"192.0.2.0/24", "127.0.0.0/8"}))
	if ip := must[*kp.InstancePolicy](t)(c.GetAllowedIPInstancePolicy(ctx)); ip == nil || !*ip.PolicyData.Enabled {
		t.Fatalf("allowed ip = %+v", ip)
	}
	ok(t, c.SetKeyCreateImportAccessInstancePolicy(ctx, true, map[string]bool{"ImportStandardKey": false}))
	if ip := must[*kp.InstancePolicy](t)(c.GetKeyCreateImportAccessInstancePolicy(ctx)); ip == nil || ip.PolicyData.Attributes.ImportStandardKey == nil ||
		*ip.PolicyData.Attributes.ImportStandardKey {
		t.Fatalf("key create import access = %+v", ip)
	}
	_, err = c.CreateImportedStandardKey(ctx, "refused", nil, rootMaterial)
	wantErr(t, err, 409, "KEY_CREATE_IMPORT_ACCESS_ERR")
	wantErr(t, c.SetAllowedNetworkInstancePolicy(ctx, true, "everywhere"), 400, "INVALID_FIELD_ERR")
}
