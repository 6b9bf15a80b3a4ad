package e2e

import (
	"encoding/json"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/backup/volume/volumetest"
)

// cliBYOK logs in and makes a Key Protect instance, a backup key and the
// delegation, returning the key's CRN.
func cliBYOK(t *testing.T, c *cli) string {
	t.Helper()
	c.must("login", "--apikey", adminKey)
	var kp map[string]any
	json.Unmarshal([]byte(c.must("resource", "service-instance-create", "my-kp", "kms", "tiered-pricing", "us-south", "--output", "json")), &kp)
	var created map[string]any
	json.Unmarshal([]byte(c.must("kp", "key", "create", "backup-key", "-i", kp["guid"].(string), "--output", "json")), &created)
	c.must("iam", "authorization-policy-create", "messagehub", "kms", "Reader,AuthorizationDelegator", "--target-service-instance-id", kp["guid"].(string))
	return created["resources"].([]any)[0].(map[string]any)["crn"].(string)
}

// TestCLIBackupsAndRestore takes a backup with the CLI, waiting with a
// progress bar, lists and shows it, restores it with -p backup_id, and
// prints the warning when a second deployment reuses the backup key.
func TestCLIBackupsAndRestore(t *testing.T) {
	p := serveProcess(t, t.TempDir())
	c := newCLI(t, p.url)
	keyCRN := cliBYOK(t, c)
	params := `{"backup_encryption_key_crn": "` + keyCRN + `"}`
	if out := c.must("resource", "service-instance-create", "es-a", "messagehub", "standard", "us-south", "-p", params); strings.Contains(out, "Warning") {
		t.Fatalf("the first deployment on a key is warned:\n%s", out)
	}
	out := c.must("resource", "service-instance-create", "es-b", "messagehub", "standard", "us-south", "-p", params)
	if !strings.Contains(out, "Warning") || !strings.Contains(out, "already used by 1 other deployment") {
		t.Fatalf("reusing the backup key prints no warning:\n%s", out)
	}

	out, errOut, code := c.run("resource", "backup-create", "es-a", "--wait")
	if code != 0 || !strings.Contains(out, "completed") || !strings.Contains(errOut, "100%") || !strings.Contains(errOut, "[###") {
		t.Fatalf("backup-create --wait: exit %d\n%s\n%s", code, out, errOut)
	}
	out = c.must("resource", "backups", "es-a")
	if !strings.Contains(out, "on_demand") || !strings.Contains(out, "completed") || !strings.Contains(out, "yes") {
		t.Fatalf("backups:\n%s", out)
	}
	var list map[string]any
	json.Unmarshal([]byte(c.must("resource", "backups", "es-a", "--output", "json")), &list)
	id := list["backups"].([]any)[0].(map[string]any)["id"].(string)
	if out := c.must("resource", "backup-show", id); !strings.Contains(out, keyCRN) || !strings.Contains(out, "Restorable:   yes") {
		t.Fatalf("backup-show:\n%s", out)
	}
	out = c.must("resource", "service-instance-create", "es-restored", "messagehub", "standard", "us-south", "-p", `{"backup_id": "`+id+`"}`)
	if !strings.Contains(out, "active") {
		t.Fatalf("restore with -p backup_id:\n%s", out)
	}
	_, errOut, code = c.run("resource", "service-instance-create", "es-bad", "messagehub", "standard", "us-south", "-p", `{"backup_id": "crn:v1:bluemix:public:messagehub:us-south:a/x:y:backup:z"}`)
	if code == 0 || !strings.Contains(errOut, "could not be found") {
		t.Fatalf("restore of a missing backup: exit %d: %s", code, errOut)
	}
}

// TestServeKeepsBackupsInS3 starts `keyline serve` with its S3 settings
// from the environment: the backup lands in the bucket.
func TestServeKeepsBackupsInS3(t *testing.T) {
	s3 := volumetest.StartS3(t)
	dir := t.TempDir()
	p := serveProcess(t, dir, "KEYLINE_BACKUP_VOLUME=s3", "KEYLINE_BACKUP_S3_ENDPOINT="+s3.Endpoint, "KEYLINE_BACKUP_S3_BUCKET=keyline",
		"KEYLINE_BACKUP_S3_ACCESS_KEY="+s3.AccessKey, "KEYLINE_BACKUP_S3_SECRET_KEY="+s3.SecretKey)
	c := newCLI(t, p.url)
	keyCRN := cliBYOK(t, c)
	c.must("resource", "service-instance-create", "es-a", "messagehub", "standard", "us-south", "-p", `{"backup_encryption_key_crn": "`+keyCRN+`"}`)
	if out := c.must("resource", "backup-create", "es-a", "--wait"); !strings.Contains(out, "completed") {
		t.Fatalf("backup-create --wait:\n%s", out)
	}
	var objects []string
	filepath.WalkDir(filepath.Join(s3.DataDir, "keyline"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".klbackup") {
			objects = append(objects, path)
		}
		return nil
	})
	if len(objects) != 1 {
		t.Fatalf("objects in the bucket: %v", objects)
	}
	if strings.Contains(p.logs(), s3.SecretKey) {
		t.Fatal("the server logged the S3 secret key")
	}
}
