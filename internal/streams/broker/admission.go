package broker

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"golang.org/x/time/rate"

	"github.com/keyline/keyline/internal/ratelog"
)

// admission counts the connections that have not logged in, in all and by
// source address. A stranger's connection costs a slot only until it logs
// in or LoginTimeout ends it, and strangers together never hold more than
// MaxPreAuthConnections, so that clients that log in still find room.
//
// It also meters how fast each source address opens connections, as
// Kafka's connection creation rate quota per IP does (KIP-612): a token
// bucket of ConnectionBurstPerIP refilled at ConnectionRatePerIP a second.
type admission struct {
	count int
	perIP map[string]int
	rates map[string]*rate.Limiter
	// sweepAt is the size of rates at which the buckets that are full
	// again, their addresses quiet, are dropped.
	sweepAt int
	counts  AdmissionCounts
}

// Default connection creation rate of one source address: a fleet of
// clients behind one NAT restarting at once (each opens a connection to
// bootstrap, then one to the broker and one to its group's coordinator) fits
// in the burst, and a steady fleet reconnects far slower than the rate.
const (
	DefaultConnectionRatePerIP  = 50
	DefaultConnectionBurstPerIP = 500
)

// AdmissionCounts count the connections a broker accepted from its listener
// since it started, by what it did with them.
type AdmissionCounts struct {
	Served  uint64 `json:"served"`
	Refused uint64 `json:"refused"` // over a cap or the rate, held or closed at once
	// Throttled of them were over their address's connection creation rate.
	Throttled uint64 `json:"throttled"`
}

// Admissions counts the connections accepted since the broker started.
func (b *Broker) Admissions() AdmissionCounts {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.preAuth.counts
}

// quietLogs are the lines a flood of hostile connections would repeat for
// each one: at most one per interval each, with a count of the others.
type quietLogs struct {
	refused, badRequest, early, loginRefused ratelog.Limiter
}

// admit takes a slot for c, a new connection, or says why there is none.
// b.mu is held.
func (b *Broker) admit(c *conn) (refusal string) {
	if !b.connectionRate(c.ip).Allow() {
		b.preAuth.counts.Throttled++
		return fmt.Sprintf("too many new connections from one address (over %g a second)", b.cfg.ConnectionRatePerIP)
	}
	switch {
	case len(b.conns) >= b.cfg.MaxConnections:
		return fmt.Sprintf("too many connections (limit %d)", b.cfg.MaxConnections)
	case b.preAuth.count >= b.cfg.MaxPreAuthConnections:
		return fmt.Sprintf("too many connections not logged in (limit %d)", b.cfg.MaxPreAuthConnections)
	case b.preAuth.perIP[c.ip] >= b.cfg.MaxPreAuthPerIP:
		return fmt.Sprintf("too many connections not logged in from one address (limit %d)", b.cfg.MaxPreAuthPerIP)
	}
	b.preAuth.counts.Served++
	b.conns[c] = struct{}{}
	b.preAuth.count++
	b.preAuth.perIP[c.ip]++
	c.preAuth = true
	return ""
}

// connectionRate is ip's bucket. b.mu is held.
func (b *Broker) connectionRate(ip string) *rate.Limiter {
	a := &b.preAuth
	if l := a.rates[ip]; l != nil {
		return l
	}
	if a.rates == nil {
		a.rates = map[string]*rate.Limiter{}
	}
	if len(a.rates) >= a.sweepAt {
		now := time.Now()
		for ip, l := range a.rates {
			if l.TokensAt(now) >= float64(l.Burst()) {
				delete(a.rates, ip)
			}
		}
		a.sweepAt = max(2*len(a.rates), 1024)
	}
	l := rate.NewLimiter(rate.Limit(b.cfg.ConnectionRatePerIP), b.cfg.ConnectionBurstPerIP)
	a.rates[ip] = l
	return l
}

// refuse turns c away. Like Kafka under its connection quotas, the broker
// holds the connection first, reading nothing, for the holder's delay, so
// that a client redialling as soon as it is closed cannot make the broker
// spin accepting and closing; past the holder's descriptor budget it is
// closed at once and its source address shut out at the socket for as long
// (connhold.Gate), where the socket takes a filter.
func (b *Broker) refuse(c *conn, refusal string) {
	b.mu.Lock()
	b.preAuth.counts.Refused++
	b.mu.Unlock()
	switch held, shut := b.cfg.Holder.Refuse(c.nc, b.gate); {
	case held:
		b.quiet.refused.Log(b.log, slog.LevelWarn, "kafka connection refused: "+refusal+"; held before closing", "remote", c.ip, "hold", b.cfg.Holder.Delay())
	case shut:
		b.quiet.refused.Log(b.log, slog.LevelWarn, "kafka connection refused: "+refusal+"; closed, too many refused connections held, and its address shut out", "remote", c.ip, "for", b.cfg.Holder.Delay())
	default:
		b.quiet.refused.Log(b.log, slog.LevelWarn, "kafka connection refused: "+refusal+"; closed at once, too many refused connections held", "remote", c.ip)
	}
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
