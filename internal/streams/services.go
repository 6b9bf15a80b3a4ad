package streams

import (
	"context"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/kms"
)

// The adapters that let deployments use the real KMS and IAM through the
// small interfaces this package declares.

// kmsKeys is the real KMS as a KeyService.
type kmsKeys struct{ k *kms.Service }

// KMSKeys is the real KMS as the KeyService of deployments.
func KMSKeys(k *kms.Service) KeyService { return kmsKeys{k} }

func splitKeyCRN(keyCRN string) (guid, id string, err error) {
	c, err := crn.Parse(keyCRN)
	if err != nil {
		return "", "", err
	}
	return c.ServiceInstance, c.Resource, nil
}

func (a kmsKeys) KeyInfo(ctx context.Context, keyCRN string) (KeyInfo, error) {
	guid, id, err := splitKeyCRN(keyCRN)
	if err != nil {
		return KeyInfo{}, err
	}
	k, err := a.k.GetKeyMetadata(ctx, guid, id)
	if err != nil {
		return KeyInfo{}, err
	}
	c, _ := crn.Parse(k.CRN)
	info := KeyInfo{CRN: k.CRN, Name: k.Name, State: k.State, Extractable: k.Extractable, AccountID: c.Account(),
		Region: c.Location, InstanceGUID: guid}
	if k.KeyVersion != nil {
		info.Version = k.KeyVersion.ID
	}
	return info, nil
}

func (a kmsKeys) Wrap(ctx context.Context, keyCRN string, dek []byte, aad []string) ([]byte, string, error) {
	guid, id, err := splitKeyCRN(keyCRN)
	if err != nil {
		return nil, "", err
	}
	res, err := a.k.Wrap(ctx, guid, id, dek, aad)
	return res.Ciphertext, res.KeyVersion.ID, err
}

func (a kmsKeys) Unwrap(ctx context.Context, keyCRN string, wrapped []byte, aad []string) ([]byte, []byte, string, error) {
	guid, id, err := splitKeyCRN(keyCRN)
	if err != nil {
		return nil, nil, "", err
	}
	res, err := a.k.Unwrap(ctx, guid, id, wrapped, aad)
	if err != nil {
		return nil, nil, "", err
	}
	if res.RewrappedKeyVersion != nil {
		return res.Plaintext, res.Ciphertext, res.RewrappedKeyVersion.ID, nil
	}
	return res.Plaintext, nil, res.KeyVersion.ID, nil
}

func (a kmsKeys) Rewrap(ctx context.Context, keyCRN string, wrapped []byte, aad []string) ([]byte, string, error) {
	guid, id, err := splitKeyCRN(keyCRN)
	if err != nil {
		return nil, "", err
	}
	res, err := a.k.Rewrap(ctx, guid, id, wrapped, aad)
	if err != nil {
		return nil, "", err
	}
	v := res.KeyVersion.ID
	if res.RewrappedKeyVersion != nil {
		v = res.RewrappedKeyVersion.ID
	}
	return res.Ciphertext, v, nil
}

func (a kmsKeys) Register(ctx context.Context, keyCRN, resourceCRN, version string) error {
	guid, id, err := splitKeyCRN(keyCRN)
	if err != nil {
		return err
	}
	prevent := false
	_, err = a.k.CreateRegistration(ctx, guid, id, resourceCRN, kms.RegistrationInput{PreventKeyDeletion: &prevent, KeyVersionID: &version})
	return err
}

func (a kmsKeys) UpdateRegistration(ctx context.Context, keyCRN, resourceCRN, version string) error {
	guid, id, err := splitKeyCRN(keyCRN)
	if err != nil {
		return err
	}
	_, err = a.k.UpdateRegistration(ctx, guid, id, resourceCRN, kms.RegistrationInput{KeyVersionID: &version})
	return err
}

func (a kmsKeys) Unregister(ctx context.Context, keyCRN, resourceCRN string) error {
	guid, id, err := splitKeyCRN(keyCRN)
	if err != nil {
		return err
	}
	return a.k.DeleteRegistration(ctx, guid, id, resourceCRN)
}

func (a kmsKeys) PendingEvents(ctx context.Context) ([]KeyEvent, error) {
	evs, err := a.k.PendingEvents(ctx, ServiceName)
	out := make([]KeyEvent, 0, len(evs))
	for _, e := range evs {
		out = append(out, KeyEvent{ID: e.ID, KeyCRN: e.KeyCRN, ResourceCRNs: e.ResourceCRNs, Action: e.Type,
			KeyVersion: e.KeyVersion.ID, CorrelationID: e.CorrelationID, Time: e.CreatedAt})
	}
	return out, err
}

func (a kmsKeys) Notifications() <-chan struct{} { return a.k.Notifications(ServiceName) }

func (a kmsKeys) AckEvent(ctx context.Context, ev KeyEvent, state, version string) error {
	guid, _, err := splitKeyCRN(ev.KeyCRN)
	if err != nil {
		return err
	}
	return a.k.AckEvent(ctx, guid, kms.EventAck{EventID: ev.ID, AdopterKeyState: state, Timestamp: time.Now(), KeyVersion: version})
}

// iamIdentity is the real IAM as an Identity.
type iamIdentity struct{ *iam.Service }

// IAMIdentity is the real IAM as the Identity of deployments.
func IAMIdentity(s *iam.Service) Identity { return iamIdentity{s} }

func (a iamIdentity) CreateDependentAuthorization(ctx context.Context, source *auth.Principal, service string, target auth.Resource, role string) error {
	_, err := a.Service.CreateDependentAuthorization(ctx, source, service, target, role)
	return err
}

func (a iamIdentity) CreateServiceCredentials(ctx context.Context, account, guid, serviceID, name, role string) (string, string, error) {
	sid, err := a.CreateServiceID(ctx, iam.ServiceIDRequest{AccountID: account, Name: serviceID})
	if err != nil {
		return "", "", err
	}
	_, key, err := a.CreateAPIKey(ctx, iam.APIKeyRequest{Name: name, IAMID: sid.IAMID})
	if err != nil {
		return "", "", err
	}
	_, err = a.CreatePolicy(ctx, iam.PolicyRequest{Type: iam.TypeAccess, Roles: []iam.PolicyRole{{RoleID: role}},
		Subjects:  []iam.PolicySubject{{Attributes: []iam.SubjectAttribute{{Name: "iam_id", Value: sid.IAMID}}}},
		Resources: []iam.PolicyResource{{Attributes: iam.ResourceAttributes(auth.Resource{AccountID: account, ServiceName: ServiceName, ServiceInstance: guid})}}})
	return key, sid.IAMID, err
}
