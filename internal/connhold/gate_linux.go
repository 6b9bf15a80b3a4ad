package connhold

import (
	"encoding/binary"
	"math"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// skfNetOff is SKF_NET_OFF: a classic BPF load at this offset plus n reads
// byte n of the packet's network (IP) header; plain offsets start at the
// TCP header, where a TCP socket's filter sees the packet.
const skfNetOff = 0xFFF00000 // -0x100000 as a uint32

// The TCP flags byte, and its bits that tell a bare SYN (SYN set, ACK not).
const (
	tcpFlagsOffset = 13
	tcpSyn         = 0x02
	tcpAck         = 0x10
)

// takesFilter says whether the socket takes a filter, by detaching none
// (a Multipath TCP socket refuses every filter option).
func takesFilter(rc syscall.RawConn) bool { return setFilter(rc, nil) == nil }

// setFilter installs on the socket a filter dropping the bare SYNs from
// addrs, or removes the filter when there are none.
func setFilter(rc syscall.RawConn, addrs []netip.Addr) error {
	var prog []bpf.RawInstruction
	if len(addrs) > 0 {
		var err error
		if prog, err = bpf.Assemble(synFilter(addrs)); err != nil {
			return err
		}
	}
	var serr error
	err := rc.Control(func(fd uintptr) {
		if len(prog) == 0 {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
			if serr == unix.ENOENT { // no filter to detach
				serr = nil
			}
			return
		}
		fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: (*unix.SockFilter)(unsafe.Pointer(&prog[0]))}
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fprog)
	})
	if err != nil {
		return err
	}
	return serr
}

// synFilter is the program: every packet passes but a bare SYN whose IPv4
// or IPv6 source is one of addrs. Each address is tested in turn with short
// jumps only (classic BPF's conditional jumps reach 255 instructions), the
// blocks joined by unconditional ones.
func synFilter(addrs []netip.Addr) []bpf.Instruction {
	var v4, v6 []bpf.Instruction
	for _, a := range addrs {
		if a.Is4() {
			b := a.As4()
			v4 = append(v4,
				bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(b[:]), SkipTrue: 0, SkipFalse: 1},
				bpf.RetConstant{Val: 0})
			continue
		}
		b := a.As16()
		v6 = append(v6,
			bpf.LoadAbsolute{Off: skfNetOff + 8, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(b[0:4]), SkipFalse: 7},
			bpf.LoadAbsolute{Off: skfNetOff + 12, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(b[4:8]), SkipFalse: 5},
			bpf.LoadAbsolute{Off: skfNetOff + 16, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(b[8:12]), SkipFalse: 3},
			bpf.LoadAbsolute{Off: skfNetOff + 20, Size: 4},
			bpf.JumpIf{Cond: bpf.JumpEqual, Val: binary.BigEndian.Uint32(b[12:16]), SkipFalse: 1},
			bpf.RetConstant{Val: 0})
	}
	// Layout: header; the IPv6 block then a jump to pass; the IPv4 block
	// falling through to pass.
	const header = 10
	v6Start := header
	v4Start := v6Start + len(v6) + 1
	pass := v4Start + 1 + len(v4)
	ja := func(at, to int) bpf.Instruction { return bpf.Jump{Skip: uint32(to - at - 1)} }
	p := []bpf.Instruction{
		/* 0 */ bpf.LoadAbsolute{Off: tcpFlagsOffset, Size: 1},
		/* 1 */ bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: tcpSyn | tcpAck},
		/* 2 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: tcpSyn, SkipTrue: 1},
		/* 3 */ ja(3, pass),
		/* 4 */ bpf.LoadAbsolute{Off: skfNetOff, Size: 1},
		/* 5 */ bpf.ALUOpConstant{Op: bpf.ALUOpShiftRight, Val: 4},
		/* 6 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 4, SkipFalse: 1},
		/* 7 */ ja(7, v4Start),
		/* 8 */ bpf.JumpIf{Cond: bpf.JumpEqual, Val: 6, SkipTrue: 1},
		/* 9 */ ja(9, pass),
	}
	p = append(p, v6...)
	p = append(p, ja(len(p), pass))
	p = append(p, bpf.LoadAbsolute{Off: skfNetOff + 12, Size: 4})
	p = append(p, v4...)
	return append(p, bpf.RetConstant{Val: math.MaxUint32})
}
