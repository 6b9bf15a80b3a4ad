package console

import "testing"

func TestBackupSizeForPeople(t *testing.T) {
	cases := []struct {
		bytes int64
		want  string
	}{{0, "0 B"}, {1023, "1023 B"}, {1024, "1.0 KiB"}, {1536, "1.5 KiB"}, {5 << 20, "5.0 MiB"}, {3 << 30, "3.0 GiB"}}
	for _, tc := range cases {
		if got := (backup{SizeBytes: tc.bytes}).Size(); got != tc.want {
			t.Errorf("%d bytes: %q, want %q", tc.bytes, got, tc.want)
		}
	}
}
