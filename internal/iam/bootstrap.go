package iam

import (
	"context"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// AdminEmail is the login of the administrator Bootstrap creates.
const AdminEmail = "admin@keyline.local"

// Bootstrap makes the installation usable on first start: it creates the
// account, an administrator user with an API key (adminAPIKey when given,
// else a random one, returned so it can be shown once), and an access policy
// granting the administrator Administrator, Manager and KeyPurge on every
// service of the account. The administrator is allowed by that policy like
// anyone else: there is no bypass. On later starts it returns the account
// with created false and no key.
func (s *Service) Bootstrap(ctx context.Context, adminAPIKey string) (account Account, apikey string, created bool, err error) {
	const op = "iam.Bootstrap"
	if adminAPIKey != "" && len(adminAPIKey) < minAPIKeyLen {
		return Account{}, "", false, errs.Ef(op, errs.Invalid, "BXNIM0109E", "The administrator API key must have at least %d characters", minAPIKeyLen)
	}
	apikey = adminAPIKey
	if apikey == "" {
		apikey = newAPIKeyValue()
	}
	now := s.clock.Now()
	var policy Policy
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		var id string
		err := tx.QueryRow(`SELECT value FROM iam_settings WHERE name = 'account'`).Scan(&id)
		if err == nil {
			var created string
			account.ID = id
			if err := tx.QueryRow(`SELECT name, created_at FROM iam_accounts WHERE id = ?`, id).Scan(&account.Name, &created); err != nil {
				return errs.Internalf(op, err)
			}
			account.CreatedAt = store.ParseTime(created)
			return nil
		}
		if !store.IsNoRows(err) {
			return errs.Internalf(op, err)
		}
		created = true
		account = Account{ID: randomHex(16), Name: "Keyline", CreatedAt: now}
		if _, err := tx.Exec(`INSERT INTO iam_accounts (id, name, created_at) VALUES (?, ?, ?)`, account.ID, account.Name, store.Time(now)); err != nil {
			return errs.Internalf(op, err)
		}
		if _, err := tx.Exec(`INSERT INTO iam_settings (name, value) VALUES ('account', ?)`, account.ID); err != nil {
			return errs.Internalf(op, err)
		}
		admin, err := insertUserTx(tx, op, account.ID, AdminEmail, "admin", "", now)
		if err != nil {
			return err
		}
		key, err := insertAPIKeyTx(tx, admin, "keyline-admin", "Created at first start for the administrator", apikey, admin.IAMID, now)
		if err != nil {
			return err
		}
		policy, err = s.normalize(op, PolicyRequest{Type: TypeAccess,
			Description: "Administrator of the account, created at first start",
			Subjects:    []PolicySubject{{Attributes: []SubjectAttribute{{Name: "iam_id", Value: admin.IAMID}}}},
			Roles:       []PolicyRole{{RoleID: auth.RoleAdministrator}, {RoleID: auth.RoleManager}, {RoleID: auth.RoleKeyPurge}},
			Resources:   []PolicyResource{{Attributes: []ResourceAttribute{{Name: "accountId", Value: account.ID}}}},
		})
		if err != nil {
			return err
		}
		policy.ID, policy.State, policy.Version = newPolicyID(), StateActive, 1
		policy.CreatedAt, policy.LastModifiedAt, policy.CreatedByID, policy.LastModifiedByID = now, now, admin.IAMID, admin.IAMID
		if err := s.savePolicyTx(tx, policy, true); err != nil {
			return err
		}
		bctx := auth.WithPrincipal(ctx, admin.principal())
		if err := s.record(bctx, tx, ActionAPIKeyCreate, auditTarget(key.CRN, key.Name, "iam-identity/apikey"), 201); err != nil {
			return err
		}
		return s.record(bctx, tx, "iam-am.policy.create", policyTarget(policy), 201)
	})
	if err != nil || !created {
		return account, "", false, err
	}
	return account, apikey, true, nil
}
