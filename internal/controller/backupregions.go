package controller

import "strings"

// Where a deployment's backup encryption key (BYOK for backups) may live:
// the one source of truth for the CLI and the console's advice, and for
// the checks at provisioning (internal/streams keeps the same lists).
var (
	// BackupKeyRegions are the regions whose Key Protect keys can encrypt
	// backups ("BYOK for backups is available only in select regions").
	BackupKeyRegions = []string{"us-south", "us-east", "eu-de"}
	// DurableBackupKeyRegions are those of them whose keys survive a
	// region failure ("only keys in the select regions are durable").
	DurableBackupKeyRegions = []string{"us-south", "eu-de"}
)

// BackupKeyRegionAdvice is the sentence that tells a person where to create
// a backup key, naming both lists.
func BackupKeyRegionAdvice() string {
	return "The backup key must be a root key in a Key Protect instance in " + orList(BackupKeyRegions) +
		", whatever the deployment's location; only keys in " + orList(DurableBackupKeyRegions) +
		" survive a region failure, so choose one of those to keep backups restorable if a region fails."
}

// orList reads ["a", "b", "c"] as "a, b or c".
func orList(s []string) string {
	if len(s) < 2 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}
