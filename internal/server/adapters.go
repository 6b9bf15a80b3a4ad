package server

import (
	"context"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/controller"
	"github.com/keyline/keyline/internal/iam"
	"github.com/keyline/keyline/internal/kms"
)

// kmsBroker is the Key Protect side of kms instances in the resource controller.
type kmsBroker struct {
	kms   *kms.Service
	creds *credentials
}

func (b *kmsBroker) Provision(ctx context.Context, inst controller.Instance, params map[string]any) ([]string, error) {
	return nil, b.kms.CreateInstance(ctx, kms.Instance{GUID: inst.GUID, CRN: inst.CRN.String(), AccountID: inst.AccountID, Region: inst.Region})
}

// Suspend and Resume have nothing to do: a Key Protect instance pending
// reclamation keeps its keys (deployments registered on them keep working)
// until it is reclaimed.
func (b *kmsBroker) Suspend(ctx context.Context, inst controller.Instance) error { return nil }
func (b *kmsBroker) Resume(ctx context.Context, inst controller.Instance) error  { return nil }

func (b *kmsBroker) Reclaim(ctx context.Context, inst controller.Instance) error {
	err := b.kms.DeleteInstance(ctx, inst.GUID)
	if e := errsAs(err); e != nil && e.Code == "INSTANCE_NOT_FOUND_ERR" {
		return nil // already reclaimed by an earlier try
	}
	return err
}

func (b *kmsBroker) Credentials(ctx context.Context, inst controller.Instance, key controller.ResourceKey) (map[string]any, error) {
	apikey, iamID, _, err := b.creds.create(ctx, inst, key, auth.RoleManager)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"apikey": apikey, "iam_serviceid_crn": iamID, "instance_id": inst.GUID, "resource_instance_id": inst.CRN.String(),
		"endpoints": "/api/v2", "iam_apikey_description": "Auto-generated for key " + key.CRN.String(),
	}, nil
}

func (b *kmsBroker) RevokeCredentials(ctx context.Context, inst controller.Instance, key controller.ResourceKey) error {
	return b.creds.revoke(ctx, key)
}

// credentials makes a resource key's service ID, its access policy on the
// instance and its API key, as IBM Cloud does for service credentials. It
// is the one place that mints service credentials: Key Protect's and Event
// Streams' brokers both call it.
type credentials struct{ iam *iam.Service }

// create mints the credentials of key with key.Role on inst (defaultRole
// when the key has none) and returns the API key, its service ID's IAM ID
// and the role granted.
func (c *credentials) create(ctx context.Context, inst controller.Instance, key controller.ResourceKey, defaultRole string) (apikey, iamID, role string, err error) {
	role = firstNonEmpty(key.Role, defaultRole)
	sid, err := c.iam.CreateServiceID(ctx, iam.ServiceIDRequest{AccountID: inst.AccountID, Name: serviceIDName(key),
		Description: "Service credentials " + key.Name + " of " + inst.CRN.String()})
	if err != nil {
		return "", "", "", err
	}
	_, err = c.iam.CreatePolicy(ctx, iam.PolicyRequest{
		Type:     "access",
		Subjects: []iam.PolicySubject{{Attributes: []iam.SubjectAttribute{{Name: "iam_id", Value: sid.IAMID}}}},
		Roles:    []iam.PolicyRole{{RoleID: role}},
		Resources: []iam.PolicyResource{{Attributes: []iam.ResourceAttribute{
			{Name: "accountId", Value: inst.AccountID, Operator: "stringEquals"},
			{Name: "serviceName", Value: inst.ServiceName, Operator: "stringEquals"},
			{Name: "serviceInstance", Value: inst.GUID, Operator: "stringEquals"},
		}}},
	})
	if err != nil {
		return "", "", "", err
	}
	_, secret, err := c.iam.CreateAPIKey(ctx, iam.APIKeyRequest{Name: key.Name, IAMID: sid.IAMID, AccountID: inst.AccountID,
		Description: "Service credentials " + key.CRN.String()})
	if err != nil {
		return "", "", "", err
	}
	return secret, sid.IAMID, role, nil
}

// serviceIDName names a resource key's service ID after the key's GUID, so
// that revoking the key finds it again.
func serviceIDName(key controller.ResourceKey) string { return "ServiceId-" + key.GUID }

// revoke deletes the service ID of a resource key, and with it its API keys
// and access policies (iam deletes them with the identity). Revoking again,
// or after the instance is gone, finds nothing and succeeds.
func (c *credentials) revoke(ctx context.Context, key controller.ResourceKey) error {
	ids, err := c.iam.ListServiceIDs(ctx, key.AccountID, serviceIDName(key))
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := c.iam.DeleteServiceID(ctx, id.ID); err != nil {
			return err
		}
	}
	return nil
}

// iamIdentity is the real IAM as the streams.Identity of deployments and
// the backup.Delegation of their backups.
type iamIdentity struct{ *iam.Service }

func (a iamIdentity) CreateDependentAuthorization(ctx context.Context, source *auth.Principal, service string, target auth.Resource, role string) error {
	_, err := a.Service.CreateDependentAuthorization(ctx, source, service, target, role)
	return err
}

func firstNonEmpty(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}
