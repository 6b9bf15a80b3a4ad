package server

import (
	"context"
	"time"

	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/kms"
	"github.com/keyline/keyline/internal/streams"
)

// kmsKeys is the real KMS as the streams.KeyService of deployments and
// their backups. Keys arrive as crn.KeyRef, parsed where their CRN entered
// Keyline, so no call here parses a CRN.
type kmsKeys struct{ k *kms.Service }

func (a kmsKeys) KeyInfo(ctx context.Context, key crn.KeyRef) (streams.KeyInfo, error) {
	k, err := a.k.GetKeyMetadata(ctx, key.Instance, key.ID)
	if err != nil {
		return streams.KeyInfo{}, err
	}
	// The key was found by its instance and id, so its CRN is key.CRN's.
	info := streams.KeyInfo{CRN: k.CRN, Name: k.Name, State: k.State, Extractable: k.Extractable, AccountID: key.Account,
		Region: key.Region, InstanceGUID: key.Instance}
	if k.KeyVersion != nil {
		info.Version = k.KeyVersion.ID
	}
	return info, nil
}

func (a kmsKeys) Wrap(ctx context.Context, key crn.KeyRef, dek []byte, aad []string) ([]byte, string, error) {
	res, err := a.k.Wrap(ctx, key.Instance, key.ID, dek, aad)
	return res.Ciphertext, res.KeyVersion.ID, err
}

func (a kmsKeys) Unwrap(ctx context.Context, key crn.KeyRef, wrapped []byte, aad []string) ([]byte, []byte, string, error) {
	res, err := a.k.Unwrap(ctx, key.Instance, key.ID, wrapped, aad)
	if err != nil {
		return nil, nil, "", err
	}
	if res.RewrappedKeyVersion != nil {
		return res.Plaintext, res.Ciphertext, res.RewrappedKeyVersion.ID, nil
	}
	return res.Plaintext, nil, res.KeyVersion.ID, nil
}

func (a kmsKeys) Rewrap(ctx context.Context, key crn.KeyRef, wrapped []byte, aad []string) ([]byte, string, error) {
	res, err := a.k.Rewrap(ctx, key.Instance, key.ID, wrapped, aad)
	if err != nil {
		return nil, "", err
	}
	v := res.KeyVersion.ID
	if res.RewrappedKeyVersion != nil {
		v = res.RewrappedKeyVersion.ID
	}
	return res.Ciphertext, v, nil
}

func (a kmsKeys) Register(ctx context.Context, key crn.KeyRef, resourceCRN, version string) error {
	prevent := false
	_, err := a.k.CreateRegistration(ctx, key.Instance, key.ID, resourceCRN, kms.RegistrationInput{PreventKeyDeletion: &prevent, KeyVersionID: &version})
	return err
}

func (a kmsKeys) UpdateRegistration(ctx context.Context, key crn.KeyRef, resourceCRN, version string) error {
	_, err := a.k.UpdateRegistration(ctx, key.Instance, key.ID, resourceCRN, kms.RegistrationInput{KeyVersionID: &version})
	return err
}

func (a kmsKeys) Unregister(ctx context.Context, key crn.KeyRef, resourceCRN string) error {
	return a.k.DeleteRegistration(ctx, key.Instance, key.ID, resourceCRN)
}

func (a kmsKeys) PendingEvents(ctx context.Context) ([]streams.KeyEvent, error) {
	evs, err := a.k.PendingEvents(ctx, streams.ServiceName)
	out := make([]streams.KeyEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, streams.KeyEvent{ID: e.ID, Key: crn.KeyRef{CRN: e.KeyCRN, Instance: e.InstanceGUID, ID: e.KeyID},
			ResourceCRNs: e.ResourceCRNs, Action: e.Type, KeyVersion: e.KeyVersion.ID, CorrelationID: e.CorrelationID, Time: e.CreatedAt})
	}
	return out, err
}

func (a kmsKeys) Notifications() <-chan struct{} { return a.k.Notifications(streams.ServiceName) }

func (a kmsKeys) AckEvent(ctx context.Context, ev streams.KeyEvent, state, version string) error {
	return a.k.AckEvent(ctx, ev.Key.Instance, kms.EventAck{EventID: ev.ID, AdopterKeyState: state, Timestamp: time.Now(), KeyVersion: version})
}

// KMSKeys is the real KMS as the streams.KeyService of deployments and
// backups (and of the streams tests over the real services).
func KMSKeys(k *kms.Service) streams.KeyService { return kmsKeys{k} }

// IAMIdentity is the real IAM as the streams.Identity of deployments and
// the backup.Delegation of their backups.
func IAMIdentity(s *iam.Service) streams.Identity { return iamIdentity{s} }
