//go:build !linux

package durable

import "os"

// StartWriteback is a no-op where sync_file_range does not exist; the sync
// that follows still flushes everything.
func StartWriteback(f *os.File, off, n int64) {}
