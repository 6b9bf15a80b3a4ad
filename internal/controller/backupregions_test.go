package controller_test

import (
	"strings"
	"testing"

	"github.com/keyline/keyline/internal/controller"
)

func TestBackupRegionAdviceNamesEveryRegionAndTheDurableOnes(t *testing.T) {
	want := "Backup keys must come from a Key Protect instance in us-south, us-east or eu-de. Only keys in us-south and eu-de survive a region failure"
	if !strings.HasPrefix(controller.BackupRegionAdvice, want) {
		t.Fatalf("advice %q, want it to start %q", controller.BackupRegionAdvice, want)
	}
	for _, r := range controller.DurableBackupKeyRegions {
		found := false
		for _, b := range controller.BackupKeyRegions {
			found = found || b == r
		}
		if !found {
			t.Errorf("durable region %s is not a backup key region", r)
		}
	}
}
