package backup

import (
	"fmt"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/crn"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Backup types, as Cloud Databases names them.
const (
	TypeOnDemand  = "on_demand"
	TypeScheduled = "scheduled"
)

// Backup statuses.
const (
	StatusRunning   = "running"
	StatusCompleted = "completed"
	StatusFailed    = "failed"
)

// Which key sealed a backup's data key.
const (
	sealedByBackupKey = "backup" // the deployment's backup key, through the KMS as block storage (is)
	sealedByDiskKey   = "disk"   // no backup key: the disk key, as the deployment (messagehub)
	sealedByMaster    = "master" // neither: the server's master key
)

// Backup is one backup of a deployment.
type Backup struct {
	ID             string // a UUID: the last part of the CRN
	CRN            string // <deployment CRN with backup:<id>>
	DeploymentGUID string
	DeploymentCRN  string
	DeploymentName string
	AccountID      string
	Type           string // TypeOnDemand or TypeScheduled
	Status         string
	KeyCRN         string // the root key that wraps its data key ("" for the master key)
	SealedBy       string
	Object         string // its object on the deployment's volume
	Size           int64
	TaskID         string // the task's CRN
	Reason         string // why it failed
	CreatedAt      time.Time
	FinishedAt     time.Time

	Key crn.KeyRef // KeyCRN parsed, once, when the backup is made or loaded
}

var migrations = []store.Migration{{ID: "backup/0001", SQL: `
CREATE TABLE backup_backups (
	id TEXT PRIMARY KEY,
	crn TEXT NOT NULL UNIQUE,
	deployment_guid TEXT NOT NULL,
	deployment_crn TEXT NOT NULL,
	deployment_name TEXT NOT NULL,
	account_id TEXT NOT NULL,
	type TEXT NOT NULL,
	status TEXT NOT NULL,
	key_crn TEXT NOT NULL,
	sealed_by TEXT NOT NULL,
	object TEXT NOT NULL,
	size INTEGER NOT NULL,
	task_id TEXT NOT NULL,
	reason TEXT NOT NULL,
	created_at TEXT NOT NULL,
	finished_at TEXT NOT NULL
);
CREATE INDEX backup_backups_deployment ON backup_backups (deployment_guid, created_at);
CREATE TABLE backup_volumes (
	deployment_guid TEXT PRIMARY KEY,
	crn TEXT NOT NULL,
	key_crn TEXT NOT NULL,
	created_at TEXT NOT NULL
);
`}}

const backupColumns = `id, crn, deployment_guid, deployment_crn, deployment_name, account_id, type, status, key_crn, sealed_by, object, size, task_id, reason, created_at, finished_at`

func scanBackup(row interface{ Scan(...any) error }) (*Backup, error) {
	var b Backup
	var created, finished string
	if err := row.Scan(&b.ID, &b.CRN, &b.DeploymentGUID, &b.DeploymentCRN, &b.DeploymentName, &b.AccountID, &b.Type, &b.Status,
		&b.KeyCRN, &b.SealedBy, &b.Object, &b.Size, &b.TaskID, &b.Reason, &created, &finished); err != nil {
		return nil, err
	}
	b.CreatedAt = store.ParseTime(created)
	if finished != "" {
		b.FinishedAt = store.ParseTime(finished)
	}
	if b.KeyCRN != "" {
		// Checked when the deployment was provisioned: a failure means
		// the row was changed behind Keyline's back.
		key, err := crn.ParseKey(b.KeyCRN)
		if err != nil {
			return nil, fmt.Errorf("backup %s: the stored key CRN: %w", b.ID, err)
		}
		b.Key = key
	}
	return &b, nil
}

func insertBackup(tx *store.Tx, b *Backup) error {
	_, err := tx.Exec(`INSERT INTO backup_backups (`+backupColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		b.ID, b.CRN, b.DeploymentGUID, b.DeploymentCRN, b.DeploymentName, b.AccountID, b.Type, b.Status, b.KeyCRN, b.SealedBy,
		b.Object, b.Size, b.TaskID, b.Reason, store.Time(b.CreatedAt), timeOrEmpty(b.FinishedAt))
	return err
}

// finishBackup records the end of a running backup.
func finishBackup(tx *store.Tx, b *Backup) error {
	_, err := tx.Exec(`UPDATE backup_backups SET status = ?, size = ?, reason = ?, finished_at = ?, task_id = ? WHERE id = ? AND status = ?`,
		b.Status, b.Size, b.Reason, timeOrEmpty(b.FinishedAt), b.TaskID, b.ID, StatusRunning)
	return err
}

func timeOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return store.Time(t)
}

// backupByID finds a backup by its CRN or its id.
func backupByID(tx *store.Tx, op, id string) (*Backup, error) {
	col := "id"
	if strings.HasPrefix(id, "crn:") {
		col = "crn"
	}
	b, err := scanBackup(tx.QueryRow(`SELECT `+backupColumns+` FROM backup_backups WHERE `+col+` = ?`, id))
	if store.IsNoRows(err) {
		return nil, errNoBackup(op)
	}
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	return b, nil
}

func backupsOf(tx *store.Tx, deploymentGUID string) ([]Backup, error) {
	return queryBackups(tx, `deployment_guid = ? ORDER BY created_at DESC, id`, deploymentGUID)
}

// queryBackups lists the backups that the rest of a query (the WHERE
// clause on) selects.
func queryBackups(tx *store.Tx, where string, args ...any) ([]Backup, error) {
	rows, err := tx.Query(`SELECT `+backupColumns+` FROM backup_backups WHERE `+where, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []Backup{}
	for rows.Next() {
		b, err := scanBackup(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, *b)
	}
	return out, rows.Err()
}

func errNoBackup(op string) error {
	return errs.E(op, errs.NotExist, "BACKUP_NOT_FOUND", "The backup could not be found")
}
