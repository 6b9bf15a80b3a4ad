package streams

import (
	"database/sql"
	"time"

	"github.com/keyline/keyline/internal/store"
)

var migrations = []store.Migration{{ID: "streams/0001", SQL: `
CREATE TABLE streams_deployments (
	guid              TEXT PRIMARY KEY,
	crn               TEXT NOT NULL,
	account_id        TEXT NOT NULL,
	name              TEXT NOT NULL,
	plan              TEXT NOT NULL,
	region            TEXT NOT NULL,
	disk_key_crn      TEXT NOT NULL,
	backup_key_crn    TEXT NOT NULL,
	dek_id            TEXT NOT NULL,
	wrapped_dek       BLOB NOT NULL,
	key_version       TEXT NOT NULL,
	next_dek_id       TEXT NOT NULL,
	next_wrapped_dek  BLOB,
	next_key_version  TEXT NOT NULL,
	port              INTEGER NOT NULL,
	suspended         INTEGER NOT NULL,
	created_at        TEXT NOT NULL,
	updated_at        TEXT NOT NULL
);
CREATE INDEX streams_deployments_backup_key ON streams_deployments (backup_key_crn);
`}}

// record is a deployment's row. The DEK is stored only wrapped: by the
// customer's disk key, or by the master key when there is none. While a
// re-encryption runs, the next DEK is stored beside the current one so that
// an interrupted re-encryption resumes after a restart.
type record struct {
	GUID, CRN, AccountID, Name, Plan, Region string
	DiskKeyCRN, BackupKeyCRN                 string
	DEKID                                    string
	WrappedDEK                               []byte
	KeyVersion                               string
	NextDEKID                                string
	NextWrappedDEK                           []byte
	NextKeyVersion                           string
	Port                                     int
	Suspended                                bool
	CreatedAt, UpdatedAt                     time.Time
}

const recordColumns = `guid, crn, account_id, name, plan, region, disk_key_crn, backup_key_crn, dek_id, wrapped_dek,
	key_version, next_dek_id, next_wrapped_dek, next_key_version, port, suspended, created_at, updated_at`

func (r *record) scan(row interface{ Scan(...any) error }) error {
	var created, updated string
	var suspended int
	var next []byte
	if err := row.Scan(&r.GUID, &r.CRN, &r.AccountID, &r.Name, &r.Plan, &r.Region, &r.DiskKeyCRN, &r.BackupKeyCRN,
		&r.DEKID, &r.WrappedDEK, &r.KeyVersion, &r.NextDEKID, &next, &r.NextKeyVersion, &r.Port, &suspended,
		&created, &updated); err != nil {
		return err
	}
	r.NextWrappedDEK = next
	r.Suspended = suspended != 0
	r.CreatedAt, r.UpdatedAt = store.ParseTime(created), store.ParseTime(updated)
	return nil
}

func insertRecord(tx *store.Tx, r *record) error {
	_, err := tx.Exec(`INSERT INTO streams_deployments (`+recordColumns+`) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		r.GUID, r.CRN, r.AccountID, r.Name, r.Plan, r.Region, r.DiskKeyCRN, r.BackupKeyCRN, r.DEKID, r.WrappedDEK,
		r.KeyVersion, r.NextDEKID, nullBlob(r.NextWrappedDEK), r.NextKeyVersion, r.Port, boolInt(r.Suspended),
		store.Time(r.CreatedAt), store.Time(r.UpdatedAt))
	tx.Changed(DeploymentTopic, r.GUID)
	return err
}

// updateRecord writes every mutable column of r.
func updateRecord(tx *store.Tx, r *record) error {
	_, err := tx.Exec(`UPDATE streams_deployments SET dek_id=?, wrapped_dek=?, key_version=?, next_dek_id=?,
		next_wrapped_dek=?, next_key_version=?, port=?, suspended=?, updated_at=? WHERE guid=?`,
		r.DEKID, r.WrappedDEK, r.KeyVersion, r.NextDEKID, nullBlob(r.NextWrappedDEK), r.NextKeyVersion, r.Port,
		boolInt(r.Suspended), store.Time(r.UpdatedAt), r.GUID)
	tx.Changed(DeploymentTopic, r.GUID)
	return err
}

func getRecord(tx *store.Tx, guid string) (*record, error) {
	r := &record{}
	if err := r.scan(tx.QueryRow(`SELECT `+recordColumns+` FROM streams_deployments WHERE guid=?`, guid)); err != nil {
		return nil, err
	}
	return r, nil
}

func listRecords(tx *store.Tx) ([]*record, error) {
	rows, err := tx.Query(`SELECT ` + recordColumns + ` FROM streams_deployments ORDER BY created_at`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*record
	for rows.Next() {
		r := &record{}
		if err := r.scan(rows); err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// backupKeyUsers lists the other deployments whose backups use keyCRN.
func backupKeyUsers(tx *store.Tx, keyCRN, except string) ([]string, error) {
	rows, err := tx.Query(`SELECT crn FROM streams_deployments WHERE backup_key_crn=? AND guid<>? ORDER BY crn`, keyCRN, except)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

func nullBlob(b []byte) any {
	if b == nil {
		return sql.Null[[]byte]{}
	}
	return b
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
