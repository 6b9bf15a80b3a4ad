package kms

import (
	"context"
	"encoding/json"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Key policy types.
const (
	PolicyRotation       = "rotation"
	PolicyDualAuthDelete = "dualAuthDelete"
)

// PolicyType is the type of key policy resources.
const PolicyType = "application/vnd.ibm.kms.policy+json"

// Policy is a key policy as Key Protect shows it.
type Policy struct {
	ID             string          `json:"id"`
	CRN            string          `json:"crn"`
	Type           string          `json:"type"`
	Rotation       *RotationView   `json:"rotation,omitempty"`
	DualAuthDelete *DualAuthPolicy `json:"dualAuthDelete,omitempty"`
	CreatedBy      string          `json:"createdBy"`
	CreationDate   time.Time       `json:"creationDate"`
	UpdatedBy      string          `json:"updatedBy"`
	LastUpdateDate time.Time       `json:"lastUpdateDate"`
}

// RotationView is a rotation policy's settings.
type RotationView struct {
	Enabled       bool `json:"enabled"`
	IntervalMonth int  `json:"interval_month,omitempty"`
}

// DualAuthPolicy is a dual-authorization policy's setting.
type DualAuthPolicy struct {
	Enabled *bool `json:"enabled"`
}

// PolicyInput is one policy resource of a PUT.
type PolicyInput struct {
	Rotation       *RotationPolicy
	DualAuthDelete *DualAuthPolicy
}

func upsertKeyPolicy(tx *store.Tx, keyID, typ string, enabled bool, interval int, by string, now time.Time) error {
	t := store.Time(now)
	_, err := tx.Exec(`INSERT INTO kms_key_policies (key_id, policy_type, id, enabled, interval_month, created_by, creation_date, updated_by, last_update_date)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key_id, policy_type) DO UPDATE SET enabled = excluded.enabled,
		interval_month = excluded.interval_month, updated_by = excluded.updated_by, last_update_date = excluded.last_update_date`,
		keyID, typ, uuid.NewString(), enabled, interval, by, t, by, t)
	if err != nil {
		return errs.Internalf("kms.upsertKeyPolicy", err)
	}
	if typ == PolicyDualAuthDelete {
		if _, err := tx.Exec(`UPDATE kms_keys SET dual_auth = ? WHERE id = ?`, enabled, keyID); err != nil {
			return errs.Internalf("kms.upsertKeyPolicy", err)
		}
	}
	return nil
}

func loadKeyPolicies(tx *store.Tx, in Instance, keyID, typ string) ([]Policy, error) {
	rows, err := tx.Query(`SELECT policy_type, id, enabled, interval_month, created_by, creation_date, updated_by, last_update_date
		FROM kms_key_policies WHERE key_id = ? AND (? = '' OR policy_type = ?) ORDER BY policy_type DESC`, keyID, typ, typ)
	if err != nil {
		return nil, errs.Internalf("kms.loadKeyPolicies", err)
	}
	defer rows.Close()
	var out []Policy
	for rows.Next() {
		var p Policy
		var pt, created, updated string
		var enabled bool
		var interval int
		if err := rows.Scan(&pt, &p.ID, &enabled, &interval, &p.CreatedBy, &created, &p.UpdatedBy, &updated); err != nil {
			return nil, errs.Internalf("kms.loadKeyPolicies", err)
		}
		p.CRN, p.Type = keyCRN(in, keyID), PolicyType
		p.CreationDate, p.LastUpdateDate = store.ParseTime(created), store.ParseTime(updated)
		if pt == PolicyRotation {
			p.Rotation = &RotationView{Enabled: enabled, IntervalMonth: interval}
		} else {
			p.DualAuthDelete = &DualAuthPolicy{Enabled: &enabled}
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// GetKeyPolicies returns a key's policies (typ "" = all).
func (s *Service) GetKeyPolicies(ctx context.Context, guid, idOrAlias, typ string) ([]Policy, error) {
	const op = "kms.GetKeyPolicies"
	var out []Policy
	err := s.onKey(ctx, op, guid, idOrAlias, auth.KMSPoliciesRead, false, func(c *keyCall) error {
		if err := checkPolicyType(op, typ); err != nil {
			return err
		}
		var err error
		out, err = loadKeyPolicies(c.tx, c.in, c.key.ID, typ)
		return err
	})
	return out, err
}

func checkPolicyType(op, typ string) error {
	if typ != "" && typ != PolicyRotation && typ != PolicyDualAuthDelete {
		return errs.E(op, errs.Invalid, "INVALID_QUERY_PARAM_ERR", "The query_param 'policy' must be: rotation or dualAuthDelete").On("query_param", "policy")
	}
	return nil
}

// SetKeyPolicies sets a key's rotation and/or dual-authorization policy.
// With typ set, the body must hold exactly one policy of that type.
func (s *Service) SetKeyPolicies(ctx context.Context, guid, idOrAlias, typ string, in []PolicyInput) ([]Policy, error) {
	const op = "kms.SetKeyPolicies"
	var out []Policy
	err := s.onKey(ctx, op, guid, idOrAlias, auth.KMSPoliciesWrite, true, func(c *keyCall) error {
		if err := checkPolicyType(op, typ); err != nil {
			return err
		}
		if len(in) == 0 || len(in) > 2 || (typ != "" && len(in) != 1) {
			return errs.E(op, errs.Invalid, "NUM_COLLECTION_RESOURCE_ERR", "The number of policy resources is not valid for this request")
		}
		if c.key.State == StateDestroyed {
			return errDeleted(op)
		}
		current, err := loadKeyPolicies(c.tx, c.in, c.key.ID, "")
		if err != nil {
			return err
		}
		by := principalID(ctx)
		for _, p := range in {
			switch {
			case p.Rotation != nil && p.DualAuthDelete == nil && (typ == "" || typ == PolicyRotation):
				if c.key.Extractable {
					return errs.E(op, errs.Invalid, "KEY_ROOT_REQ_ERR", "Rotation policy cannot be set on a standard key")
				}
				enabled := p.Rotation.Enabled == nil || *p.Rotation.Enabled
				interval := 0
				for _, cp := range current {
					if cp.Rotation != nil {
						interval = cp.Rotation.IntervalMonth
					}
				}
				if p.Rotation.IntervalMonth != nil {
					if err := validInterval(op, *p.Rotation.IntervalMonth); err != nil {
						return err
					}
					interval = *p.Rotation.IntervalMonth
				}
				if enabled && interval == 0 {
					return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'interval_month' must be: provided to enable rotation").On("field", "interval_month")
				}
				if err := upsertKeyPolicy(c.tx, c.key.ID, PolicyRotation, enabled, interval, by, c.now); err != nil {
					return err
				}
				c.ev.RequestData["rotationEnabled"], c.ev.RequestData["rotationInterval"] = enabled, interval
			case p.DualAuthDelete != nil && p.Rotation == nil && (typ == "" || typ == PolicyDualAuthDelete):
				if p.DualAuthDelete.Enabled == nil {
					return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'enabled' must be: provided").On("field", "enabled")
				}
				enabled := *p.DualAuthDelete.Enabled
				if c.key.DualAuth && !enabled {
					return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR",
						"The field 'dualAuthDelete.enabled' must be: true: a dual authorization policy cannot be disabled once enabled").On("field", "dualAuthDelete")
				}
				if err := upsertKeyPolicy(c.tx, c.key.ID, PolicyDualAuthDelete, enabled, 0, by, c.now); err != nil {
					return err
				}
				c.ev.RequestData["dualAuthDelete"] = enabled
			default:
				return errs.E(op, errs.Invalid, "BODY_QUERY_PARAM_MISMATCH_ERR", "Data in body does not match data required by query parameter")
			}
		}
		out, err = loadKeyPolicies(c.tx, c.in, c.key.ID, typ)
		return err
	})
	return out, err
}

// Instance policy types.
const (
	InstancePolicyDualAuthDelete        = "dualAuthDelete"
	InstancePolicyRotation              = "rotation"
	InstancePolicyAllowedNetwork        = "allowedNetwork"
	InstancePolicyAllowedIP             = "allowedIP"
	InstancePolicyKeyCreateImportAccess = "keyCreateImportAccess"
	InstancePolicyMetrics               = "metrics"
)

// InstancePolicy is an instance policy as Key Protect shows it.
type InstancePolicy struct {
	PolicyType   string             `json:"policy_type"`
	PolicyData   InstancePolicyData `json:"policy_data"`
	CreatedBy    string             `json:"createdBy,omitempty"`
	CreationDate *time.Time         `json:"creationDate,omitempty"`
	UpdatedBy    string             `json:"updatedBy,omitempty"`
	LastUpdated  *time.Time         `json:"lastUpdated,omitempty"`
}

// InstancePolicyData is an instance policy's settings.
type InstancePolicyData struct {
	Enabled    *bool               `json:"enabled"`
	Attributes *InstancePolicyAttr `json:"attributes,omitempty"`
}

// InstancePolicyAttr holds the attributes of every instance policy type.
type InstancePolicyAttr struct {
	AllowedNetwork    *string  `json:"allowed_network,omitempty"`
	AllowedIP         []string `json:"allowed_ip,omitempty"`
	CreateRootKey     *bool    `json:"create_root_key,omitempty"`
	CreateStandardKey *bool    `json:"create_standard_key,omitempty"`
	ImportRootKey     *bool    `json:"import_root_key,omitempty"`
	ImportStandardKey *bool    `json:"import_standard_key,omitempty"`
	EnforceToken      *bool    `json:"enforce_token,omitempty"`
	IntervalMonth     *int     `json:"interval_month,omitempty"`
}

var instancePolicyTypes = map[string]bool{InstancePolicyDualAuthDelete: true, InstancePolicyRotation: true, InstancePolicyAllowedNetwork: true,
	InstancePolicyAllowedIP: true, InstancePolicyKeyCreateImportAccess: true, InstancePolicyMetrics: true}

func validateInstancePolicy(op string, p InstancePolicy) error {
	bad := func(msg string) error {
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'policy_data' must be: "+msg).On("field", "policy_data")
	}
	if p.PolicyData.Enabled == nil {
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR", "The field 'enabled' must be: provided").On("field", "enabled")
	}
	enabled, a := *p.PolicyData.Enabled, p.PolicyData.Attributes
	none := a == nil || (a.AllowedNetwork == nil && a.AllowedIP == nil && a.CreateRootKey == nil && a.CreateStandardKey == nil &&
		a.ImportRootKey == nil && a.ImportStandardKey == nil && a.EnforceToken == nil && a.IntervalMonth == nil)
	switch p.PolicyType {
	case InstancePolicyDualAuthDelete, InstancePolicyMetrics:
		if !none {
			return bad("without attributes for this policy type")
		}
	case InstancePolicyRotation:
		if enabled && (a == nil || a.IntervalMonth == nil) {
			return bad("an interval_month attribute when rotation is enabled")
		}
		if !enabled && a != nil && a.IntervalMonth != nil {
			return bad("without attributes when rotation is disabled")
		}
		if a != nil && a.IntervalMonth != nil {
			return validInterval(op, *a.IntervalMonth)
		}
	case InstancePolicyAllowedNetwork:
		if a == nil || a.AllowedNetwork == nil || (*a.AllowedNetwork != "public-and-private" && *a.AllowedNetwork != "private-only") {
			return bad("an allowed_network attribute of public-and-private or private-only")
		}
	case InstancePolicyAllowedIP:
		if enabled && (a == nil || len(a.AllowedIP) == 0) {
			return bad("an allowed_ip attribute listing CIDRs when enabled")
		}
		if a != nil {
			for _, c := range a.AllowedIP {
				if _, err := netip.ParsePrefix(c); err != nil {
					return bad("allowed_ip entries that are CIDRs")
				}
			}
		}
	case InstancePolicyKeyCreateImportAccess:
		if a != nil && (a.AllowedNetwork != nil || a.AllowedIP != nil || a.IntervalMonth != nil) {
			return bad("only create_root_key, create_standard_key, import_root_key, import_standard_key and enforce_token attributes")
		}
	default:
		return errs.E(op, errs.Invalid, "INVALID_FIELD_ERR",
			"The field 'policy_type' must be: dualAuthDelete, rotation, allowedNetwork, allowedIP, keyCreateImportAccess or metrics").On("field", "policy_type")
	}
	return nil
}

// instancePolicies is what key creation needs of an instance's policies.
type instancePolicies struct {
	DualAuth         bool
	RotationEnabled  bool
	RotationInterval int
	Access           *InstancePolicyAttr // keyCreateImportAccess, when enabled
}

func readInstancePolicies(tx *store.Tx, guid, typ string) ([]InstancePolicy, error) {
	rows, err := tx.Query(`SELECT policy_type, data, created_by, creation_date, updated_by, last_updated FROM kms_instance_policies
		WHERE instance_guid = ? AND (? = '' OR policy_type = ?) ORDER BY policy_type`, guid, typ, typ)
	if err != nil {
		return nil, errs.Internalf("kms.readInstancePolicies", err)
	}
	defer rows.Close()
	var out []InstancePolicy
	for rows.Next() {
		var p InstancePolicy
		var data, created, updated string
		if err := rows.Scan(&p.PolicyType, &data, &p.CreatedBy, &created, &p.UpdatedBy, &updated); err != nil {
			return nil, errs.Internalf("kms.readInstancePolicies", err)
		}
		if err := json.Unmarshal([]byte(data), &p.PolicyData); err != nil {
			return nil, errs.Internalf("kms.readInstancePolicies", err)
		}
		p.CreationDate, p.LastUpdated = timePtr(created), timePtr(updated)
		out = append(out, p)
	}
	return out, rows.Err()
}

func loadInstancePolicies(tx *store.Tx, guid string) (instancePolicies, error) {
	var out instancePolicies
	ps, err := readInstancePolicies(tx, guid, "")
	for _, p := range ps {
		if p.PolicyData.Enabled == nil || !*p.PolicyData.Enabled {
			continue
		}
		switch p.PolicyType {
		case InstancePolicyDualAuthDelete:
			out.DualAuth = true
		case InstancePolicyRotation:
			out.RotationEnabled = true
			if a := p.PolicyData.Attributes; a != nil && a.IntervalMonth != nil {
				out.RotationInterval = *a.IntervalMonth
			}
		case InstancePolicyKeyCreateImportAccess:
			out.Access = p.PolicyData.Attributes
			if out.Access == nil {
				out.Access = &InstancePolicyAttr{}
			}
		}
	}
	return out, err
}

// allowsCreate applies the keyCreateImportAccess policy: attributes left
// out allow.
func (p instancePolicies) allowsCreate(op string, extractable, imported, withToken bool) error {
	a := p.Access
	if a == nil {
		return nil
	}
	allowed := func(b *bool) bool { return b == nil || *b }
	ok := true
	switch {
	case !extractable && !imported:
		ok = allowed(a.CreateRootKey)
	case extractable && !imported:
		ok = allowed(a.CreateStandardKey)
	case !extractable && imported:
		ok = allowed(a.ImportRootKey)
	default:
		ok = allowed(a.ImportStandardKey)
	}
	if ok && imported && a.EnforceToken != nil && *a.EnforceToken && !withToken {
		ok = false
	}
	if !ok {
		return errs.E(op, errs.Conflict, "KEY_CREATE_IMPORT_ACCESS_ERR", "The instance policy keyCreateImportAccess does not allow this key to be created or imported")
	}
	return nil
}

// GetInstancePolicies returns the instance's policies (typ "" = all).
func (s *Service) GetInstancePolicies(ctx context.Context, guid, typ string) ([]InstancePolicy, error) {
	const op = "kms.GetInstancePolicies"
	var out []InstancePolicy
	err := s.onInstance(ctx, op, guid, auth.KMSInstancePolRead, false, func(tx *store.Tx, in Instance, ev *AuditEvent) error {
		if typ != "" && !instancePolicyTypes[typ] {
			return errs.E(op, errs.Invalid, "INVALID_QUERY_PARAM_ERR", "The query_param 'policy' must be: an instance policy type").On("query_param", "policy")
		}
		var err error
		out, err = readInstancePolicies(tx, in.GUID, typ)
		return err
	})
	return out, err
}

// SetInstancePolicies sets instance policies; they apply to keys created
// afterwards. With typ set, the body must hold exactly one policy of that type.
func (s *Service) SetInstancePolicies(ctx context.Context, guid, typ string, in []InstancePolicy) error {
	const op = "kms.SetInstancePolicies"
	return s.onInstance(ctx, op, guid, auth.KMSInstancePolWrite, true, func(tx *store.Tx, inst Instance, ev *AuditEvent) error {
		if len(in) == 0 || (typ != "" && len(in) != 1) {
			return errs.E(op, errs.Invalid, "NUM_COLLECTION_RESOURCE_ERR", "Only a single instance policy may be created per query parameter")
		}
		seen := map[string]bool{}
		var types []string
		for _, p := range in {
			if typ != "" && p.PolicyType != typ {
				return errs.E(op, errs.Invalid, "BODY_QUERY_PARAM_MISMATCH_ERR", "Data in body does not match data required by query parameter")
			}
			if err := validateInstancePolicy(op, p); err != nil {
				return err
			}
			if seen[p.PolicyType] {
				return errs.E(op, errs.Invalid, "BAD_BODY_ERR", "Each policy type may appear once")
			}
			seen[p.PolicyType] = true
			types = append(types, p.PolicyType)
			data, _ := json.Marshal(p.PolicyData)
			now, by := store.Time(s.clock.Now()), principalID(ctx)
			if _, err := tx.Exec(`INSERT INTO kms_instance_policies (instance_guid, policy_type, data, created_by, creation_date, updated_by, last_updated)
				VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (instance_guid, policy_type) DO UPDATE SET data = excluded.data,
				updated_by = excluded.updated_by, last_updated = excluded.last_updated`, inst.GUID, p.PolicyType, string(data), by, now, by, now); err != nil {
				return errs.Internalf(op, err)
			}
		}
		ev.RequestData["policyTypes"] = types
		if seen[InstancePolicyAllowedIP] {
			// Enforced from its commit on: the index is swapped then.
			s.allowedIPChanged(ctx, tx, inst.GUID)
		}
		return nil
	})
}

// AllowedIPPort is the private endpoint port of an instance with an enabled
// allowedIP policy (0 when it has none). Key Protect documents this call as
// bypassing the allowedIP policy: a client locked out by it can still learn
// the port to use.
func (s *Service) AllowedIPPort(ctx context.Context, guid string) (int, error) {
	const op = "kms.AllowedIPPort"
	port := 0
	ctx = exemptFromAllowedIP(ctx)
	err := s.onInstance(ctx, op, guid, auth.KMSInstancePolRead, false, func(tx *store.Tx, in Instance, ev *AuditEvent) error {
		ev.Action = "kms.instance-allowed-ip-port.read"
		ps, err := readInstancePolicies(tx, in.GUID, InstancePolicyAllowedIP)
		if len(ps) == 1 && ps[0].PolicyData.Enabled != nil && *ps[0].PolicyData.Enabled {
			port = privateEndpointPort
		}
		return err
	})
	return port, err
}

// privateEndpointPort is the port Keyline reports for allowedIP instances:
// the one listener serves every network, so it is the listener's own port
// by convention.
const privateEndpointPort = 8443
