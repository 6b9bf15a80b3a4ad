package connhold

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync"
	"syscall"
	"time"
)

// MaxShut is how many source addresses a gate shuts out at once. Past it a
// refused connection is closed at once, as before there were gates; the
// filter stays a few hundred instructions long (the kernel allows 4096).
const MaxShut = 256

// Gate shuts source addresses out of one listening socket for a while: the
// kernel drops their connection attempts (a bare SYN) before anything is
// accepted, by a classic BPF filter attached to the socket. A client refused
// faster than the holder can hold it (its descriptor budget spent) is thus
// held in its own kernel's SYN retries (1, 3, 7 s...), at no cost here of a
// descriptor, an accept or a close. Connections already open from the
// address are untouched: the filter lets through every packet but a bare
// SYN. Where sockets take no filter (not Linux, or not a TCP socket) a gate
// does nothing and refused connections are closed at once.
//
// A nil *Gate is valid and does nothing.
type Gate struct {
	rc    syscall.RawConn
	delay time.Duration

	mu       sync.Mutex
	until    map[netip.Addr]time.Time // shut out now, until then
	offences map[netip.Addr]offence   // recently shut out
	timer    *time.Timer
	closed   bool
	err      error  // the last failure to program the socket
	shut     uint64 // times an address was shut out
}

// NewGate is a gate on ln's socket, shutting an address out for delay
// (DefaultDelay when 0). It is nil when ln's socket cannot take a filter.
func NewGate(ln net.Listener, delay time.Duration) *Gate {
	if delay <= 0 {
		delay = DefaultDelay
	}
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil || !takesFilter(rc) {
		return nil
	}
	return &Gate{rc: rc, delay: delay, until: map[netip.Addr]time.Time{}, offences: map[netip.Addr]offence{}}
}

// offence is an address's last shutting out: when it ends, how long it
// was, and how many times in a row it was doubled.
type offence struct {
	ends    time.Time
	d       time.Duration
	doubled int
}

// maxDoublings bounds how long an address is shut out: 2^5 times the
// delay (160 s for the default 5 s).
const maxDoublings = 5

// Shut drops addr's connection attempts for the gate's delay, and says
// whether it did (false: the gate is nil, closed, full, or the socket
// refused the filter). An address shut out again within as long after its
// last shutting out ended as that one lasted is shut out twice as long,
// up to 2^5 times the delay: otherwise the clients of an address redialling
// in a loop all come back the moment it ends, and the server accepts and
// refuses them all again, in a burst every few seconds.
func (g *Gate) Shut(addr netip.Addr) bool {
	if g == nil || !addr.IsValid() {
		return false
	}
	addr = addr.Unmap()
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if g.closed {
		return false
	}
	if t, ok := g.until[addr]; ok && t.After(now) {
		return true // connections it opened before, accepted now
	}
	if len(g.until) >= MaxShut {
		return false
	}
	o, ok := g.offences[addr]
	switch {
	case !ok || now.Sub(o.ends) >= o.d:
		o = offence{d: g.delay}
	case o.doubled < maxDoublings:
		o.d, o.doubled = 2*o.d, o.doubled+1
	}
	o.ends = now.Add(o.d)
	g.until[addr] = o.ends
	if !g.program() {
		delete(g.until, addr)
		return false
	}
	g.offences[addr] = o
	g.shut++
	return true
}

// program installs the filter for the addresses shut out now and arms the
// timer for the first to be let in again; g.mu is held.
func (g *Gate) program() bool {
	now := time.Now()
	var next time.Time
	addrs := make([]netip.Addr, 0, len(g.until))
	for a, t := range g.until {
		if !t.After(now) {
			delete(g.until, a)
			continue
		}
		addrs = append(addrs, a)
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for a, o := range g.offences {
		if now.Sub(o.ends) >= o.d { // forgiven: the next is a first again
			delete(g.offences, a)
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	err := setFilter(g.rc, addrs)
	g.err = err
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	if !next.IsZero() {
		g.timer = time.AfterFunc(next.Sub(now), g.expire)
	}
	return err == nil
}

func (g *Gate) expire() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closed {
		g.program()
	}
}

// Close stops the gate's timer; the socket's filter goes with the socket.
func (g *Gate) Close() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	if g.timer != nil {
		g.timer.Stop()
	}
}

// GateStats are what a gate does and did.
type GateStats struct {
	Shut      int    `json:"shut"`       // addresses shut out now
	ShutTotal uint64 `json:"shut_total"` // times an address was shut out
	LastError string `json:"last_error,omitempty"`
}

// Stats says what the gate shuts out; zero for a nil gate.
func (g *Gate) Stats() GateStats {
	if g == nil {
		return GateStats{}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	s := GateStats{Shut: len(g.until), ShutTotal: g.shut}
	if g.err != nil {
		s.LastError = g.err.Error()
	}
	return s
}

// Listen binds a TCP listener whose socket takes a gate: a plain TCP
// socket, where Go would otherwise make a listener a Multipath TCP one on
// kernels that have it, and an MPTCP socket refuses socket filters. Kafka
// and HTTP clients speak plain TCP; an MPTCP client falls back to it.
func Listen(network, addr string) (net.Listener, error) {
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	return lc.Listen(context.Background(), network, addr)
}

// Gated is a listener that knows the gate on its socket (a listener handing
// on connections accepted elsewhere, say).
type Gated interface {
	Gate() *Gate
}

// GateOf is the gate of ln when it has one, else a new one on its socket
// (nil when it cannot take one).
func GateOf(ln net.Listener, delay time.Duration) *Gate {
	if g, ok := ln.(Gated); ok {
		return g.Gate()
	}
	return NewGate(ln, delay)
}

// sourceOf is c's remote address, invalid when it is not an IP address.
func sourceOf(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr()
	}
	return netip.Addr{}
}

// Refuse turns c away: it is held (see Hold), or when the holder is full
// closed at once and its source address shut out at g for the delay, so
// that it cannot redial at once. It says whether c was held, and whether
// its source was shut out.
func (h *Holder) Refuse(c net.Conn, g *Gate) (held, shut bool) {
	src := sourceOf(c)
	if h.Hold(c) {
		return true, false
	}
	return false, g.Shut(src)
}
