package broker

import (
	"fmt"
	"net"

	"github.com/keyline/keyline/internal/ratelog"
)

// admission counts the connections that have not logged in, in all and by
// source address. A stranger's connection costs a slot only until it logs
// in or LoginTimeout ends it, and strangers together never hold more than
// MaxPreAuthConnections, so that clients that log in still find room.
type admission struct {
	count int
	perIP map[string]int
}

// quietLogs are the lines a flood of hostile connections would repeat for
// each one: at most one per interval each, with a count of the others.
type quietLogs struct {
	refused, badRequest, early, loginRefused ratelog.Limiter
}

// admit takes a slot for c, a new connection, or says why there is none.
// b.mu is held.
func (b *Broker) admit(c *conn) (refusal string) {
	switch {
	case len(b.conns) >= b.cfg.MaxConnections:
		return fmt.Sprintf("too many connections (limit %d)", b.cfg.MaxConnections)
	case b.preAuth.count >= b.cfg.MaxPreAuthConnections:
		return fmt.Sprintf("too many connections not logged in (limit %d)", b.cfg.MaxPreAuthConnections)
	case b.preAuth.perIP[c.ip] >= b.cfg.MaxPreAuthPerIP:
		return fmt.Sprintf("too many connections not logged in from one address (limit %d)", b.cfg.MaxPreAuthPerIP)
	}
	b.conns[c] = struct{}{}
	b.preAuth.count++
	b.preAuth.perIP[c.ip]++
	c.preAuth = true
	return ""
}

// loggedIn gives back c's stranger slot.
func (b *Broker) loggedIn(c *conn) {
	b.mu.Lock()
	b.release(c)
	b.mu.Unlock()
}

// forget drops c, which has ended. b.mu is held.
func (b *Broker) forget(c *conn) {
	delete(b.conns, c)
	b.release(c)
}

func (b *Broker) release(c *conn) {
	if !c.preAuth {
		return
	}
	c.preAuth = false
	b.preAuth.count--
	if b.preAuth.perIP[c.ip]--; b.preAuth.perIP[c.ip] <= 0 {
		delete(b.preAuth.perIP, c.ip)
	}
}

// ConnectionCounts are a broker's open connections.
type ConnectionCounts struct {
	Open    int `json:"open"`
	PreAuth int `json:"not_logged_in"`
}

// Connections counts the open connections.
func (b *Broker) Connections() ConnectionCounts {
	b.mu.Lock()
	defer b.mu.Unlock()
	return ConnectionCounts{Open: len(b.conns), PreAuth: b.preAuth.count}
}

// sourceIP is the host part of a remote address: connections are counted
// by host, whatever their port.
func sourceIP(a net.Addr) string {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}
