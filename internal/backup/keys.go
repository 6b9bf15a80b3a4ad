package backup

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/backup/archive"
	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/streams"
)

// BlockStorage is the service name of the backup volumes' identity: with
// Bring Your Own Key for backups, block storage (not the deployment) uses
// the backup key, under the dependent authorization the deployment made.
const BlockStorage = "is"

// blockStorage is the block storage identity acting for a deployment's
// backup volume.
func blockStorage(accountID, guid, deploymentCRN string) *auth.Principal {
	return &auth.Principal{Type: auth.Service, ServiceName: BlockStorage, AccountID: accountID, SourceInstance: guid,
		SourceCRN: deploymentCRN, IAMID: "crn-" + deploymentCRN, Name: BlockStorage, CredentialType: "s2s-authorization"}
}

// deploymentIdentity is the deployment itself (Event Streams), which uses
// its disk key.
func deploymentIdentity(accountID, guid, deploymentCRN string) *auth.Principal {
	return &auth.Principal{Type: auth.Service, ServiceName: streams.ServiceName, AccountID: accountID, SourceInstance: guid,
		SourceCRN: deploymentCRN, IAMID: "crn-" + deploymentCRN, Name: streams.ServiceName, CredentialType: "s2s-authorization"}
}

// kmsRootKey wraps one backup's data key with a Key Protect root key as
// principal. The additional data binds the wrapped key to its deployment
// and backup, so it cannot be moved to another backup.
type kmsRootKey struct {
	keys      streams.KeyService
	principal *auth.Principal
	key       crn.KeyRef
	aad       []string
}

// rootKeyError marks an error as the KMS's refusal to use a backup's root
// key, so that the reason given to the user speaks of the key only when the
// key is the cause.
type rootKeyError struct{ err error }

func (e rootKeyError) Error() string { return e.err.Error() }
func (e rootKeyError) Unwrap() error { return e.err }

func (k kmsRootKey) WrapDEK(ctx context.Context, dek []byte) (archive.WrappedDEK, error) {
	wrapped, version, err := k.keys.Wrap(auth.WithPrincipal(ctx, k.principal), k.key, dek, k.aad)
	if err != nil {
		return archive.WrappedDEK{}, rootKeyError{err}
	}
	return archive.WrappedDEK{KeyCRN: k.key.CRN, KeyVersion: version, Ciphertext: wrapped}, nil
}

func (k kmsRootKey) UnwrapDEK(ctx context.Context, w archive.WrappedDEK) ([]byte, error) {
	if subtle.ConstantTimeCompare([]byte(w.KeyCRN), []byte(k.key.CRN)) != 1 {
		return nil, errs.E("backup.UnwrapDEK", errs.Unprocessable, "BACKUP_MODIFIED", "The backup names another root key than the one it was taken with: the backup was modified")
	}
	dek, _, _, err := k.keys.Unwrap(auth.WithPrincipal(ctx, k.principal), k.key, w.Ciphertext, k.aad)
	switch {
	case err == nil:
		return dek, nil
	case errs.KindOf(err) == errs.Unprocessable:
		return nil, errs.E("backup.UnwrapDEK", errs.Unprocessable, "BACKUP_MODIFIED", "The backup's wrapped key does not unwrap: the backup was modified").Because(err)
	}
	return nil, rootKeyError{err}
}

// masterKey wraps the data keys of deployments without any key of their
// own under the server's master key.
type masterKey struct {
	aead *seal.AEAD
	aad  []byte
}

const masterKeyName = "keyline:master-key"

func (k masterKey) WrapDEK(ctx context.Context, dek []byte) (archive.WrappedDEK, error) {
	return archive.WrappedDEK{KeyCRN: masterKeyName, Ciphertext: k.aead.Seal(dek, k.aad)}, nil
}

func (k masterKey) UnwrapDEK(ctx context.Context, w archive.WrappedDEK) ([]byte, error) {
	dek, err := k.aead.Open(w.Ciphertext, k.aad)
	if err != nil || w.KeyCRN != masterKeyName {
		return nil, errs.E("backup.UnwrapDEK", errs.Unprocessable, "BACKUP_MODIFIED", "The backup's wrapped key does not unwrap: the backup was modified")
	}
	return dek, nil
}

// rootKey is the KeyWrapper of backup b.
func (s *Service) rootKey(b *Backup) archive.KeyWrapper {
	aad := []string{"keyline-backup", b.DeploymentCRN, b.ID}
	switch b.SealedBy {
	case sealedByBackupKey:
		return kmsRootKey{keys: s.keys, principal: blockStorage(b.AccountID, b.DeploymentGUID, b.DeploymentCRN), key: b.Key, aad: aad}
	case sealedByDiskKey:
		return kmsRootKey{keys: s.keys, principal: deploymentIdentity(b.AccountID, b.DeploymentGUID, b.DeploymentCRN), key: b.Key, aad: aad}
	}
	return masterKey{aead: s.cfg.MasterKey, aad: []byte("keyline/backup-dek\x00" + b.DeploymentCRN + "\x00" + b.ID)}
}

// keyFailure explains, for a user, why the key of backup b refused to
// wrap or unwrap, and how to fix it. ok is false when err is not about
// the key.
func keyFailure(b *Backup, doing string, err error) (reason string, code int, ok bool) {
	var ke rootKeyError
	if !errors.As(err, &ke) {
		return "", 0, false
	}
	e := errs.As(ke.err)
	if e == nil {
		return "", 0, false
	}
	keyID, kpInstance := b.Key.ID, b.Key.Instance
	which := "backup key"
	if b.SealedBy == sealedByDiskKey {
		which = "disk key (the deployment has no backup key)"
	}
	switch {
	case e.Kind == errs.Permission && b.SealedBy == sealedByBackupKey:
		return fmt.Sprintf("%s failed: Block Storage (is) is not authorized to use the backup key %s. "+
			"The is -> kms Reader authorization created by the deployment is missing, and Keyline re-creates it only while the messagehub -> kms authorization with the Reader and AuthorizationDelegator roles exists. "+
			"Fix: create that authorization with `keyline iam authorization-policy-create messagehub kms Reader,AuthorizationDelegator --target-service-instance-id %s`; "+
			"the block storage authorization is then re-created before the next backup", doing, b.KeyCRN, kpInstance), 403, true
	case e.Kind == errs.Permission:
		return fmt.Sprintf("%s failed: the deployment is not authorized to use its %s %s. Fix: create the authorization with `keyline iam authorization-policy-create messagehub kms Reader --target-service-instance-id %s`",
			doing, which, b.KeyCRN, kpInstance), 403, true
	case e.Kind == errs.Gone:
		return fmt.Sprintf("%s failed: the %s %s was deleted, which shreds every backup sealed with it and stops new ones. "+
			"Fix: restore the key within 30 days of its deletion (`keyline kp key restore %s -i %s`), or create a new deployment with another backup key",
			doing, which, b.KeyCRN, keyID, kpInstance), 410, true
	case e.Kind == errs.NotExist:
		return fmt.Sprintf("%s failed: the %s %s no longer exists (it was deleted and purged), so backups sealed with it can never be read again. Fix: create a new deployment with another backup key",
			doing, which, b.KeyCRN), 404, true
	case e.Kind == errs.Conflict:
		return fmt.Sprintf("%s failed: the %s %s is disabled or expired. Fix: enable it with `keyline kp key enable %s -i %s` and try again",
			doing, which, b.KeyCRN, keyID, kpInstance), 409, true
	case e.Kind == errs.Unavailable:
		return fmt.Sprintf("%s failed: Key Protect cannot be reached now. Fix: try again later", doing), 503, true
	}
	return "", 0, false
}
