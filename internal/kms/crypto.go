package kms

import (
	"context"
	"crypto/rand"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
)

// WrapResult is the answer to wrap, unwrap and rewrap. Ciphertext is the
// opaque wrapped key (the HTTP API shows it in base64).
type WrapResult struct {
	Plaintext           []byte // unwrap, or wrap of a generated DEK
	Ciphertext          []byte // wrap, rewrap, or unwrap of an old version's ciphertext
	KeyVersion          KeyVersion
	RewrappedKeyVersion *KeyVersion
}

// Limits on wrap input.
const MaxWrapPlaintext = 7500

func versionOf(v *versionCipher) KeyVersion {
	return KeyVersion{ID: v.idText, CreationDate: timePtr(v.created)}
}

// cryptoKey is the common gate of wrap, unwrap and rewrap.
func (s *Service) cryptoKey(ctx context.Context, op, guid, idOrAlias, action string, aad []string) (*hotKey, Instance, error) {
	p, in, err := s.instance(ctx, op, guid)
	if err != nil {
		s.recordFailure(ctx, action, target{crn: in.CRN, name: guid, typ: typeInstance}, err)
		return nil, in, err
	}
	hk, err := s.hotKey(ctx, in, idOrAlias)
	if err != nil {
		if aerr := s.authorize(ctx, op, p, action, in, ""); aerr != nil {
			err = aerr
		}
		s.recordFailure(ctx, action, target{crn: keyCRN(in, idOrAlias), name: idOrAlias, typ: typeKey}, err)
		return nil, in, err
	}
	t := target{crn: hk.crn, name: hk.name, typ: typeKey}
	if err := s.authorize(ctx, op, p, action, in, hk.id); err != nil {
		s.recordFailure(ctx, action, t, err)
		return nil, in, err
	}
	err = checkAAD(op, aad)
	if err == nil {
		err = hk.usable(op, action, s.clock.Now())
	}
	if err != nil {
		s.recordFailure(ctx, action, t, err)
		return nil, in, err
	}
	return hk, in, nil
}

func checkAAD(op string, aad []string) error {
	if len(aad) > maxAADItems {
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'aad' must be: at most 32 strings").On("field", "aad")
	}
	for _, a := range aad {
		if len(a) > maxAADItemLen {
			return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'aad' must be: strings of at most 255 characters").On("field", "aad")
		}
	}
	return nil
}

// usable says whether action may use the key in its current state (§3.4).
func (k *hotKey) usable(op, action string, now time.Time) error {
	if k.extractable {
		return errRootRequired(op)
	}
	switch st := k.effectiveState(now); {
	case st == StateDestroyed:
		return errs.E(op, errs.Gone, "KEY_DELETED_ERR", "The key has been deleted and is no longer available")
	case st == StateActive:
		return nil
	case st == StateDeactivated && action != auth.KMSKeyWrap:
		return nil
	}
	return errInvalidState(op)
}

// recordCrypto records a successful wrap, unwrap or rewrap with version v
// (and rewrapped, the latest version, when the DEK was rewrapped).
func (s *Service) recordCrypto(ctx context.Context, hk *hotKey, action string, v, rewrapped *versionCipher) error {
	// The event's maps are reused from call to call: the Auditor keeps
	// nothing of them once Record returns. The hot key's identifiers are
	// boxed once, when it is loaded: storing a string in a map[string]any
	// otherwise allocates, on every wrap.
	data := cryptoEventData.Get().(*eventData)
	defer data.release()
	ev := successWith(action, target{crn: hk.crn, name: hk.name, typ: typeKey}, data.request, data.response)
	ev.RequestData["instanceID"] = hk.auditInstance
	ev.RequestData["keyRingId"] = hk.auditRing
	ev.ResponseData["keyId"] = hk.auditID
	ev.ResponseData["keyVersionId"] = v.auditID
	if rewrapped != nil {
		ev.ResponseData["rewrappedKeyVersionId"] = rewrapped.auditID
	}
	return s.record(ctx, ev)
}

// eventData is a pair of event maps for recordCrypto to reuse.
type eventData struct{ request, response map[string]any }

var cryptoEventData = sync.Pool{New: func() any {
	return &eventData{request: make(map[string]any, 4), response: make(map[string]any, 3)}
}}

// release empties the maps and gives them back for another event.
func (d *eventData) release() {
	clear(d.request)
	clear(d.response)
	cryptoEventData.Put(d)
}

// Wrap wraps plaintext (a DEK) with the key's latest version; with no
// plaintext it generates a 256-bit DEK and returns it with its wrapping.
func (s *Service) Wrap(ctx context.Context, instanceGUID, idOrAlias string, plaintext []byte, aad []string) (WrapResult, error) {
	const op = "kms.Wrap"
	action := auth.KMSKeyWrap
	hk, _, err := s.cryptoKey(ctx, op, instanceGUID, idOrAlias, action, aad)
	if err != nil {
		return WrapResult{}, err
	}
	var res WrapResult
	if len(plaintext) > MaxWrapPlaintext || (plaintext != nil && len(plaintext) == 0) {
		err := errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'plaintext' must be: 1 to 7,500 bytes of base64 encoded key material").On("field", "plaintext")
		s.recordFailure(ctx, action, target{crn: hk.crn, name: hk.name, typ: typeKey}, err)
		return WrapResult{}, err
	}
	if plaintext == nil {
		plaintext = make([]byte, 32)
		rand.Read(plaintext)
		res.Plaintext = plaintext
	}
	res.Ciphertext = hk.latest.seal(plaintext, aad)
	res.KeyVersion = versionOf(hk.latest)
	if err := s.recordCrypto(ctx, hk, action, hk.latest, nil); err != nil {
		return WrapResult{}, err
	}
	return res, nil
}

// badCiphertext is open's one answer to a ciphertext it cannot open; made
// only then, not on every unwrap.
func badCiphertext(op string) error {
	return errs.E(op, errs.Unprocessable, "UNPROCESSABLE_CIPHERTEXT_ERR", "The provided ciphertext is invalid or corrupted")
}

// open finds the version that sealed ciphertext and opens it.
func (hk *hotKey) open(op string, ciphertext []byte, aad []string) ([]byte, *versionCipher, error) {
	w, err := parseWrapped(ciphertext)
	if err != nil {
		return nil, nil, badCiphertext(op)
	}
	v := hk.versions[w.version]
	if v == nil {
		return nil, nil, badCiphertext(op)
	}
	pt, err := v.open(w, aad)
	if err != nil {
		return nil, nil, badCiphertext(op)
	}
	return pt, v, nil
}

// Unwrap returns the DEK in ciphertext. If a version older than the latest
// sealed it, the result also carries the DEK rewrapped with the latest.
func (s *Service) Unwrap(ctx context.Context, instanceGUID, idOrAlias string, ciphertext []byte, aad []string) (WrapResult, error) {
	const op = "kms.Unwrap"
	return s.unwrap(ctx, op, auth.KMSKeyUnwrap, instanceGUID, idOrAlias, ciphertext, aad)
}

// Rewrap rewraps ciphertext with the key's latest version without
// returning the DEK.
func (s *Service) Rewrap(ctx context.Context, instanceGUID, idOrAlias string, ciphertext []byte, aad []string) (WrapResult, error) {
	const op = "kms.Rewrap"
	return s.unwrap(ctx, op, auth.KMSKeyRewrap, instanceGUID, idOrAlias, ciphertext, aad)
}

func (s *Service) unwrap(ctx context.Context, op, action, guid, idOrAlias string, ciphertext []byte, aad []string) (WrapResult, error) {
	hk, _, err := s.cryptoKey(ctx, op, guid, idOrAlias, action, aad)
	if err != nil {
		return WrapResult{}, err
	}
	pt, v, err := hk.open(op, ciphertext, aad)
	if err != nil {
		s.recordFailure(ctx, action, target{crn: hk.crn, name: hk.name, typ: typeKey}, err)
		return WrapResult{}, err
	}
	res := WrapResult{KeyVersion: versionOf(v)}
	var rewrapped *versionCipher
	if v != hk.latest || action == auth.KMSKeyRewrap {
		res.Ciphertext = hk.latest.seal(pt, aad)
		latest := versionOf(hk.latest)
		res.RewrappedKeyVersion = &latest
		rewrapped = hk.latest
	}
	if action == auth.KMSKeyUnwrap {
		res.Plaintext = pt
	} else {
		seal.Wipe(pt)
	}
	if err := s.recordCrypto(ctx, hk, action, v, rewrapped); err != nil {
		return WrapResult{}, err
	}
	return res, nil
}
