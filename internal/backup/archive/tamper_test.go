package archive_test

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"

	"github.com/keyline/keyline/internal/errs"
)

// layout finds the regions of a backup file: the header and each chunk
// (its frame included).
type layout struct {
	headerEnd int
	chunks    [][2]int // [start, end) of frame + sealed bytes
}

func parseLayout(t *testing.T, b []byte) layout {
	t.Helper()
	l := layout{headerEnd: 14 + int(binary.BigEndian.Uint32(b[10:14]))}
	for pos := l.headerEnd; pos < len(b); {
		n := int(binary.BigEndian.Uint32(b[pos:]) &^ (1 << 31))
		l.chunks = append(l.chunks, [2]int{pos, pos + 4 + n})
		pos += 4 + n
	}
	if len(l.chunks) < 5 {
		t.Fatalf("the test backup has %d chunks; it needs several", len(l.chunks))
	}
	return l
}

func flip(b []byte, i int, mask byte) []byte {
	c := bytes.Clone(b)
	c[i] ^= mask
	return c
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// TestDamagedBackupIsRefusedWithNothingRestored changes a backup in every
// region, truncates it at many points, reorders, drops, repeats and
// splices chunks and appends bytes: each time the restore fails with a
// clear Unprocessable error and leaves neither the target nor its
// temporary directory.
func TestDamagedBackupIsRefusedWithNothingRestored(t *testing.T) {
	src := openStore(t, tempDir(t, "src"), storeOptions("dep-1"))
	fillStore(t, src, 30, nil)
	good := backupBytes(t, src, 4<<10)
	other := backupBytes(t, src, 4<<10) // same content and root key, another DEK
	l := parseLayout(t, good)
	lo := parseLayout(t, other)
	ch := func(b []byte, i int) []byte { c := l.chunks[i]; return b[c[0]:c[1]] }
	last := len(l.chunks) - 1
	mid := last / 2
	hdr := good[:l.headerEnd]

	const (
		anyDamage = ""
		modified  = "BACKUP_MODIFIED"
		truncated = "BACKUP_TRUNCATED"
	)
	type tc struct {
		name string
		data []byte
		code string
	}
	cases := []tc{
		{"magic", flip(good, 0, 1), "BACKUP_INVALID"},
		{"version", flip(good, 9, 1), "BACKUP_VERSION_UNSUPPORTED"},
		{"header length", flip(good, 13, 1), anyDamage},
		{"backup id", flip(good, 15, 1), modified},
		{"created time", flip(good, 14+1+2+7, 1), modified},
		{"chunk size", flip(good, 14+1+2+8+2, 1), modified},
		{"key CRN", flip(good, 14+1+2+12+2+5, 1), "BACKUP_KEY_MISMATCH"},
		{"wrapped DEK", flip(good, l.headerEnd-3, 1), modified},
		{"first frame length", flip(good, l.chunks[0][0]+3, 1), modified},
		{"first frame final flag", flip(good, l.chunks[0][0], 0x80), modified},
		{"last frame final flag", flip(good, l.chunks[last][0], 0x80), modified},
		{"first chunk", flip(good, l.chunks[0][0]+4, 1), modified},
		{"middle chunk", flip(good, l.chunks[mid][0]+100, 0x40), modified},
		{"last chunk", flip(good, l.chunks[last][0]+5, 1), modified},
		{"last tag", flip(good, len(good)-1, 1), modified},
		{"chunks swapped", cat(hdr, ch(good, 1), ch(good, 0), good[l.chunks[2][0]:]), modified},
		{"middle chunks swapped", cat(good[:l.chunks[mid][0]], ch(good, mid+1), ch(good, mid), good[l.chunks[mid+2][0]:]), modified},
		{"chunk dropped", cat(good[:l.chunks[mid][0]], good[l.chunks[mid+1][0]:]), modified},
		{"chunk repeated", cat(good[:l.chunks[mid][1]], ch(good, mid), good[l.chunks[mid+1][0]:]), modified},
		{"chunk from another backup", cat(good[:l.chunks[mid][0]], other[lo.chunks[mid][0]:lo.chunks[mid][1]], good[l.chunks[mid+1][0]:]), modified},
		{"header of another backup", cat(other[:lo.headerEnd], good[l.headerEnd:]), modified},
		{"final chunk dropped", good[:l.chunks[last][0]], truncated},
		{"byte appended", cat(good, []byte{0}), modified},
		{"garbage appended", cat(good, bytes.Repeat([]byte("garbage"), 100)), modified},
		{"final chunk appended again", cat(good, ch(good, last)), modified},
		{"empty file", nil, "BACKUP_INVALID"},
	}
	// Truncation at every chunk boundary, inside frames and inside chunks.
	for i, c := range l.chunks {
		if i > 2 && i < last-2 && i != mid {
			continue // a sample of the middle is enough
		}
		cases = append(cases,
			tc{"truncated at chunk boundary", good[:c[0]], truncated},
			tc{"truncated in frame", good[:c[0]+2], truncated},
			tc{"truncated in chunk", good[:(c[0]+c[1])/2], truncated},
			tc{"truncated before tag end", good[:c[1]-1], truncated})
	}
	for _, n := range []int{5, 12, 14, 20, l.headerEnd - 1, l.headerEnd} {
		cases = append(cases, tc{"truncated in header", good[:n], anyDamage})
	}

	restoreOpts := storeOptions("dep-2")
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			target := tempDir(t, "restored")
			err := restoreFrom(t, bytes.NewReader(c.data), target, restoreOpts)
			e := errs.As(err)
			if e == nil || e.Kind != errs.Unprocessable {
				t.Fatalf("restore of a damaged backup = %v, want an Unprocessable error", err)
			}
			if c.code != anyDamage && e.Code != c.code {
				t.Fatalf("restore = %v, want code %s", err, c.code)
			}
			for _, p := range []string{target, target + ".restoring"} {
				if _, err := os.Lstat(p); !os.IsNotExist(err) {
					t.Fatalf("a failed restore left %s behind", p)
				}
			}
		})
	}

	t.Run("intact backup restores", func(t *testing.T) {
		if err := restoreFrom(t, bytes.NewReader(good), tempDir(t, "restored"), restoreOpts); err != nil {
			t.Fatal(err)
		}
	})
}
