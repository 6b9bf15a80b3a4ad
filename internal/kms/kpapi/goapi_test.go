package kpapi_test

import (
	"bytes"
	"testing"
	"time"

	kp "github.com/IBM/keyprotect-go-client"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/kms"
)

// TestServicePrincipalWrapsInProcess is how messagehub uses the KMS: Go
// calls carrying its service principal, authorized like HTTP calls.
func TestServicePrincipalWrapsInProcess(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "deployment-key", nil))
	svc := asService()
	dek := bytes.Repeat([]byte{3}, 32)
	aad := []string{"dep-0001"}
	w := must[kms.WrapResult](t)(e.svc.Wrap(svc, instance, key.ID, dek, aad))
	if w.KeyVersion.ID != key.KeyVersion.ID || w.Plaintext != nil {
		t.Fatalf("wrap = %+v", w)
	}
	gen := must[kms.WrapResult](t)(e.svc.Wrap(svc, instance, key.ID, nil, aad))
	if len(gen.Plaintext) != 32 {
		t.Fatal("no generated DEK")
	}
	u := must[kms.WrapResult](t)(e.svc.Unwrap(svc, instance, key.ID, w.Ciphertext, aad))
	if !bytes.Equal(u.Plaintext, dek) || u.Ciphertext != nil || u.RewrappedKeyVersion != nil {
		t.Fatalf("unwrap = %+v", u)
	}
	md := must[kms.Key](t)(e.svc.GetKeyMetadata(svc, instance, key.ID))
	if md.ID != key.ID || md.Payload != "" {
		t.Fatalf("metadata = %+v", md)
	}
	ok(t, c.Rotate(e.ctx, key.ID, ""))
	r := must[kms.WrapResult](t)(e.svc.Rewrap(svc, instance, key.ID, w.Ciphertext, aad))
	if r.Plaintext != nil || r.RewrappedKeyVersion == nil || r.RewrappedKeyVersion.ID == key.KeyVersion.ID || r.KeyVersion.ID != key.KeyVersion.ID {
		t.Fatalf("rewrap = %+v", r)
	}
	u2 := must[kms.WrapResult](t)(e.svc.Unwrap(svc, instance, key.ID, r.Ciphertext, aad))
	if !bytes.Equal(u2.Plaintext, dek) {
		t.Fatal("the rewrapped DEK differs")
	}

	// A deployment registers with the version its DEK was wrapped with, even
	// an older one; later it may move forward but never back.
	dep := "crn:v1:bluemix:public:messagehub:us-south:a/" + account + ":dep-0001::"
	no := false
	reg := must[kms.Registration](t)(e.svc.CreateRegistration(svc, instance, key.ID, dep, kms.RegistrationInput{PreventKeyDeletion: &no, KeyVersionID: &key.KeyVersion.ID}))
	if reg.KeyVersion.ID != key.KeyVersion.ID {
		t.Fatalf("registered version %s", reg.KeyVersion.ID)
	}
	reg = must[kms.Registration](t)(e.svc.UpdateRegistration(svc, instance, key.ID, dep, kms.RegistrationInput{KeyVersionID: &r.RewrappedKeyVersion.ID}))
	if reg.KeyVersion.ID != r.RewrappedKeyVersion.ID {
		t.Fatalf("updated version %s", reg.KeyVersion.ID)
	}
	if _, err := e.svc.UpdateRegistration(svc, instance, key.ID, dep, kms.RegistrationInput{KeyVersionID: &key.KeyVersion.ID}); errs.As(err) == nil || errs.As(err).Code != "KEY_VERSION_INVALID" {
		t.Fatalf("moving a registration back a version: %v", err)
	}
	list := must[kms.RegistrationList](t)(e.svc.ListRegistrations(svc, instance, key.ID, kms.RegistrationQuery{}))
	if list.Total != 1 || list.Registrations[0].ResourceCRN != dep {
		t.Fatalf("registrations = %+v", list)
	}
	// Another service without an authorization, and a caller without a principal, are refused.
	is := auth.WithPrincipal(e.ctx, &auth.Principal{IAMID: "crn-is", AccountID: account, Type: auth.Service, ServiceName: "is"})
	if _, err := e.svc.Wrap(is, instance, key.ID, dek, aad); errs.KindOf(err) != errs.Permission {
		t.Fatalf("unauthorized service: %v", err)
	}
	if _, err := e.svc.Unwrap(e.ctx, instance, key.ID, w.Ciphertext, aad); errs.KindOf(err) != errs.Unauthenticated {
		t.Fatalf("no principal: %v", err)
	}
	// The authorization is to one instance only.
	if _, err := e.svc.GetKeyMetadata(svc, other, key.ID); err == nil {
		t.Fatal("service reached another instance")
	}
}

func TestDeleteInstanceErasesItsKeys(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "short-lived", nil))
	must[[]byte](t)(c.Wrap(e.ctx, key.ID, b64([]byte("0123456789abcdef")), nil))
	ok(t, e.svc.DeleteInstance(e.ctx, instance))
	_, err := c.GetKeyMetadata(e.ctx, key.ID)
	wantErr(t, err, 401, "UNAUTHORIZED_ERR")
	if err := e.svc.DeleteInstance(e.ctx, instance); errs.KindOf(err) != errs.NotExist {
		t.Fatalf("second delete: %v", err)
	}
	ok(t, e.svc.CreateInstance(e.ctx, kms.Instance{GUID: instance, AccountID: account}))
	ok(t, e.svc.CreateInstance(e.ctx, kms.Instance{GUID: instance, AccountID: account})) // a retry
	if err := e.svc.CreateInstance(e.ctx, kms.Instance{GUID: instance, AccountID: "acct-other"}); errs.KindOf(err) != errs.Conflict {
		t.Fatalf("instance GUID reused by another account: %v", err)
	}
	_, err = c.GetKeyMetadata(e.ctx, key.ID)
	wantErr(t, err, 404, "KEY_NOT_FOUND_ERR")
}

// TestWrapKeepsWorkingThroughRotations wraps and unwraps from several
// goroutines while the key rotates: every DEK comes back, whichever version
// wrapped it.
func TestWrapKeepsWorkingThroughRotations(t *testing.T) {
	e := newEnv(t)
	c := e.client(manager)
	key := must[*kp.Key](t)(c.CreateRootKey(e.ctx, "busy", nil))
	svc := asService()
	stop := make(chan struct{})
	errc := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func(g int) {
			dek := bytes.Repeat([]byte{byte(g)}, 32)
			for {
				select {
				case <-stop:
					errc <- nil
					return
				default:
				}
				w, err := e.svc.Wrap(svc, instance, key.ID, dek, nil)
				if err != nil {
					errc <- err
					return
				}
				u, err := e.svc.Unwrap(svc, instance, key.ID, w.Ciphertext, nil)
				if err != nil || !bytes.Equal(u.Plaintext, dek) {
					errc <- errs.E("test", errs.Internal, "", "unwrap lost a DEK")
					return
				}
			}
		}(g)
	}
	for i := 0; i < 5; i++ {
		e.clock.Advance(time.Hour)
		ok(t, c.Rotate(e.ctx, key.ID, ""))
	}
	close(stop)
	for g := 0; g < 8; g++ {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	if v := must[*kp.KeyVersions](t)(c.ListKeyVersions(e.ctx, key.ID, nil)); len(v.KeyVersion) != 6 {
		t.Fatalf("%d versions", len(v.KeyVersion))
	}
}
