package durable

import (
	"os"

	"golang.org/x/sys/unix"
)

// StartWriteback asks the kernel to start writing [off, off+n) of f to
// disk now, without waiting. It promises nothing (only a sync does): it
// lets the disk work while the writer prepares what comes next, so that
// the sync that follows finds less to flush. Pass whole pages that will
// not be written again: writing a page under writeback may wait for it.
func StartWriteback(f *os.File, off, n int64) {
	if n > 0 {
		unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
	}
}
