// Package durable makes changes to files survive a crash: data synced before
// a file is closed, and directory entries synced after files are created,
// renamed or removed in them.
package durable

import "os"

// SyncDir makes a directory's entries (new, renamed, removed files) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	return SyncClose(d)
}

// SyncClose syncs and closes f, returning the first error.
func SyncClose(f *os.File) error {
	err := f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}
