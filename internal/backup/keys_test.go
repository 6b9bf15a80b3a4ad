package backup

import (
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
)

// TestKeyFailuresSayWhyAndHowToFix maps each way a KMS refuses a backup's
// key to a reason naming the key and the fix, with the status the audit
// event carries; other errors are not taken for key failures.
func TestKeyFailuresSayWhyAndHowToFix(t *testing.T) {
	const keyCRN = "crn:v1:bluemix:public:kms:us-south:a/acct:kp-guid:key:key-id"
	key, err := crn.ParseKey(keyCRN)
	if err != nil {
		t.Fatal(err)
	}
	byBackupKey := &Backup{KeyCRN: keyCRN, Key: key, SealedBy: sealedByBackupKey}
	byDiskKey := &Backup{KeyCRN: keyCRN, Key: key, SealedBy: sealedByDiskKey}
	cases := []struct {
		name string
		b    *Backup
		err  error
		code int
		says []string
	}{
		{"block storage not authorized", byBackupKey, errs.E("kms", errs.Permission, "access_denied", "no"), 403,
			[]string{"Block Storage (is) is not authorized", keyCRN, "AuthorizationDelegator", "--target-service-instance-id kp-guid"}},
		{"deployment not authorized", byDiskKey, errs.E("kms", errs.Permission, "access_denied", "no"), 403,
			[]string{"disk key", "authorization-policy-create messagehub kms Reader --target-service-instance-id kp-guid"}},
		{"key deleted", byBackupKey, errs.E("kms", errs.Gone, "KEY_DELETED_ERR", "gone"), 410,
			[]string{"was deleted", "shreds", "keyline kp key restore key-id -i kp-guid"}},
		{"key purged", byBackupKey, errs.E("kms", errs.NotExist, "KEY_NOT_FOUND_ERR", "none"), 404,
			[]string{"purged", "can never be read again"}},
		{"key disabled", byBackupKey, errs.E("kms", errs.Conflict, "KEY_ACTION_INVALID_STATE_ERR", "state"), 409,
			[]string{"disabled", "keyline kp key enable key-id -i kp-guid"}},
		{"KMS down", byBackupKey, errs.E("kms", errs.Unavailable, "", "down"), 503, []string{"cannot be reached", "try again"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reason, code, ok := keyFailure(c.b, "The backup", errs.E("backup", errs.Internal, "", "wrapped").Because(rootKeyError{c.err}))
			if !ok || code != c.code {
				t.Fatalf("keyFailure = %d, %v; want %d", code, ok, c.code)
			}
			for _, w := range c.says {
				if !strings.Contains(reason, w) {
					t.Errorf("reason %q does not say %q", reason, w)
				}
			}
		})
	}
	for _, err := range []error{
		errs.E("streams", errs.Conflict, "DEPLOYMENT_LOCKED", "locked"),
		errs.E("seglog", errs.Conflict, "STORE_CLOSED", "closed"),
		errs.E("archive", errs.Unprocessable, "BACKUP_MODIFIED", "modified"),
		errs.E("volume", errs.NotExist, "OBJECT_NOT_FOUND", "missing"),
		errs.E("iam", errs.Permission, "access_denied", "not from the KMS"),
	} {
		if _, _, ok := keyFailure(byBackupKey, "The backup", err); ok {
			t.Errorf("%v was taken for a key failure", err)
		}
	}
}
