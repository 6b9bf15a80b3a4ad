package controller

import "strings"

// The seed's "select regions" for backup keys: bring your own key for
// backups is offered only with keys in BackupKeyRegions, and of those only
// keys in DurableBackupKeyRegions survive a region failure, so backups stay
// restorable whatever the deployment's own region. The console and the CLI
// both advise from these lists, so they say the same thing.
var (
	BackupKeyRegions        = []string{"us-south", "us-east", "eu-de"}
	DurableBackupKeyRegions = []string{"us-south", "eu-de"}
)

// BackupRegionAdvice is the one sentence people read when they choose a
// backup encryption key.
var BackupRegionAdvice = "Backup keys must come from a Key Protect instance in " + orList(BackupKeyRegions) +
	". Only keys in " + andList(DurableBackupKeyRegions) +
	" survive a region failure, so choose one of those, whatever the deployment's region."

func andList(v []string) string { return joinLast(v, " and ") }
func orList(v []string) string  { return joinLast(v, " or ") }

// joinLast joins v with commas and last before the final item.
func joinLast(v []string, last string) string {
	if len(v) < 2 {
		return strings.Join(v, "")
	}
	return strings.Join(v[:len(v)-1], ", ") + last + v[len(v)-1]
}
