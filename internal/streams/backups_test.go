package streams

import (
	"testing"

	"github.com/keyline/keyline/internal/errs"
)

func TestBackupScheduleIsWholeHoursUpToAWeek(t *testing.T) {
	cases := []struct {
		name  string
		value any
		want  int // 0: refused
	}{
		{"absent is daily", nil, 24},
		{"six hours", float64(6), 6},
		{"an int", 12, 12},
		{"a week", float64(168), 168},
		{"a fraction", 0.5, 0},
		{"zero", float64(0), 0},
		{"negative", float64(-3), 0},
		{"over a week", float64(169), 0},
		{"a string", "6", 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			params := map[string]any{}
			if c.value != nil {
				params[ParamBackupSchedule] = c.value
			}
			got, err := BackupScheduleHours(params)
			if c.want == 0 {
				if !errs.Is(errs.Invalid, err) {
					t.Fatalf("%v accepted as %d hours", c.value, got)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %d, %v; want %d", got, err, c.want)
			}
		})
	}
}
