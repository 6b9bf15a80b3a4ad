package streams

import (
	"maps"
	"testing"

	"github.com/keyline/keyline/internal/errs"
)

func TestCheckParametersNamesAndRefusals(t *testing.T) {
	const key = "crn:v1:bluemix:public:kms:us-south:a/acct:kp:key:k1"
	for _, tc := range []struct {
		name string
		in   map[string]any
		want map[string]any
		code string
	}{
		{"none", nil, map[string]any{}, ""},
		{"canonical names pass", map[string]any{ParamDiskKey: key, ParamBackupKey: key, ParamBackupSchedule: 12.0, ParamBackupID: "b"},
			map[string]any{ParamDiskKey: key, ParamBackupKey: key, ParamBackupSchedule: 12.0, ParamBackupID: "b"}, ""},
		{"disk alias", map[string]any{"disk_encryption_key": key}, map[string]any{ParamDiskKey: key}, ""},
		{"backup alias", map[string]any{"backup_encryption_key": key}, map[string]any{ParamBackupKey: key}, ""},
		{"alias and name agree", map[string]any{"disk_encryption_key": key, ParamDiskKey: key}, map[string]any{ParamDiskKey: key}, ""},
		{"alias and name disagree", map[string]any{"disk_encryption_key": key, ParamDiskKey: key + "x"}, nil, "CONFLICTING_PARAMETER"},
		{"misspelt", map[string]any{"disk_encryption_key_cnr": key}, nil, "UNKNOWN_PARAMETER"},
		{"another service's parameter", map[string]any{"members_memory_allocation_mb": 4096.0}, nil, "UNKNOWN_PARAMETER"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CheckParameters(tc.in)
			if tc.code != "" {
				if e := errs.As(err); e == nil || e.Code != tc.code || errs.KindOf(err) != errs.Invalid {
					t.Fatalf("err = %v, want %s (invalid)", err, tc.code)
				}
				return
			}
			if err != nil || !maps.Equal(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
