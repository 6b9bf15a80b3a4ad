//go:build !linux

package connhold

import (
	"net/netip"
	"syscall"
)

func setFilter(syscall.RawConn, []netip.Addr) error { return nil }

func takesFilter(syscall.RawConn) bool { return false }
