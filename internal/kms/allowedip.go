package kms

import (
	"context"
	"encoding/json"
	"maps"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Enforcement of the allowedIP instance policy.
//
// Key Protect's "Managing an allowed IP policy" (cloud.ibm.com/docs/key-protect?
// topic=key-protect-manage-allowed-ip) says that with the policy enabled
// "Key Protect only permits access to the resources in your Key Protect
// instance from IP addresses that you have listed", that a request from any
// other address gets "a HTTP 401 error stating that you are unauthorized to
// make a request to the Key Protect instance", that "Service to service calls
// will bypass allowed IP policy enforcement", and that calls to
// GET /api/v2/instance/allowed_ip_port "bypass allowed IP policy enforcement".
// It names no exemption for the policy endpoints, so reading, changing or
// disabling the policy from an address outside it is refused like anything
// else: a locked-out user recovers through an address the policy allows (or,
// in Keyline, an operator acting in-process), as on IBM Cloud through support.
//
// The docs give no reason code; the refusal uses Key Protect's usual 401 code,
// UNAUTHORIZED_ERR, so clients that branch on it keep working, with a message
// that says the policy is why.

// ipAllowList is the CIDRs of one instance's enabled allowedIP policy.
// IPv4-mapped IPv6 prefixes are stored as IPv4 prefixes, so that one form of
// an address matches whichever form the policy was written in.
type ipAllowList []netip.Prefix

// newIPAllowList parses an allowed_ip attribute. The API validates entries on
// write; an entry that still fails to parse is an error, so that a caller can
// fail closed.
func newIPAllowList(cidrs []string) (ipAllowList, error) {
	out := make(ipAllowList, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, err
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// allows reports whether addr is inside one of the prefixes. An invalid
// address is inside none.
func (l ipAllowList) allows(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.WithZone("").Unmap()
	for _, p := range l {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// allowedIPIndex maps the GUID of each instance with an enabled allowedIP
// policy to its allow list. Readers (every call, including wrap and unwrap)
// take one atomic load and one map lookup; writers (a committed policy
// change, rare) copy the map and swap it.
type allowedIPIndex struct {
	mu sync.Mutex // serializes writers, each from its database read to its swap
	m  atomic.Pointer[map[string]ipAllowList]
}

func newAllowedIPIndex() *allowedIPIndex {
	x := &allowedIPIndex{}
	x.m.Store(&map[string]ipAllowList{})
	return x
}

// lookup returns the instance's allow list and whether it has one.
func (x *allowedIPIndex) lookup(guid string) (ipAllowList, bool) {
	l, ok := (*x.m.Load())[guid]
	return l, ok
}

// set installs the instance's allow list; a nil list removes the instance
// (no enabled policy). The caller holds x.mu.
func (x *allowedIPIndex) set(guid string, l ipAllowList) {
	next := maps.Clone(*x.m.Load())
	if l == nil {
		delete(next, guid)
	} else {
		next[guid] = l
	}
	x.m.Store(&next)
}

// allowListOf is the allow list a stored allowedIP policy puts in force: nil
// when it is disabled. A policy whose CIDRs cannot be parsed allows no
// address (fail closed) rather than every address.
func allowListOf(d InstancePolicyData) ipAllowList {
	if d.Enabled == nil || !*d.Enabled {
		return nil
	}
	var cidrs []string
	if d.Attributes != nil {
		cidrs = d.Attributes.AllowedIP
	}
	l, err := newIPAllowList(cidrs)
	if err != nil {
		return ipAllowList{}
	}
	return l
}

// loadAllowedIP fills the index from the database at start.
func (s *Service) loadAllowedIP(ctx context.Context) error {
	s.allowedIP.mu.Lock()
	defer s.allowedIP.mu.Unlock()
	return s.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT instance_guid, data FROM kms_instance_policies WHERE policy_type = ?`, InstancePolicyAllowedIP)
		if err != nil {
			return errs.Internalf("kms.loadAllowedIP", err)
		}
		defer rows.Close()
		for rows.Next() {
			var guid, data string
			if err := rows.Scan(&guid, &data); err != nil {
				return errs.Internalf("kms.loadAllowedIP", err)
			}
			s.allowedIP.set(guid, s.storedAllowList(guid, data))
		}
		return rows.Err()
	})
}

// storedAllowList is the allow list of a stored allowedIP policy's data;
// data that cannot be read allows no address.
func (s *Service) storedAllowList(guid, data string) ipAllowList {
	var d InstancePolicyData
	if err := json.Unmarshal([]byte(data), &d); err != nil {
		s.log.Error("kms: unreadable allowedIP policy; refusing network calls to the instance", "instance", guid)
		return ipAllowList{}
	}
	return allowListOf(d)
}

// refreshAllowedIP re-reads one instance's allowedIP policy into the index.
// It runs after every commit that may change the policy. Reading the
// committed state (rather than installing what the transaction wrote) under
// the writers' lock makes the index converge on the last commit even when
// two commits' OnCommit functions run out of order. If the read fails, the
// instance refuses network calls until the next refresh (fail closed).
func (s *Service) refreshAllowedIP(ctx context.Context, guid string) {
	ctx = context.WithoutCancel(ctx)
	s.allowedIP.mu.Lock()
	defer s.allowedIP.mu.Unlock()
	s.allowedIP.set(guid, s.readAllowList(ctx, guid))
}

// readAllowList reads the instance's enforced allow list from the
// database: nil without an enabled policy; if the read fails, a list that
// allows no address (fail closed).
func (s *Service) readAllowList(ctx context.Context, guid string) ipAllowList {
	var data string
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT data FROM kms_instance_policies WHERE instance_guid = ? AND policy_type = ?`,
			guid, InstancePolicyAllowedIP).Scan(&data)
	})
	switch {
	case store.IsNoRows(err):
		return nil
	case err != nil:
		s.log.Error("kms: reading allowedIP policy; refusing network calls to the instance", "instance", guid, "err", err)
		return ipAllowList{}
	}
	return s.storedAllowList(guid, data)
}

// clientOrigin is where a Key Protect API call came from over the network.
type clientOrigin struct {
	addr   netip.Addr // invalid when the remote address could not be parsed
	exempt bool       // the endpoint bypasses the policy (allowed_ip_port)
}

type originKey struct{}

// WithClientAddr marks ctx as a Key Protect API request received over the
// network from remoteAddr (an http.Request's RemoteAddr: "host:port", or a
// bare address). Only such calls are subject to the allowedIP policy: a
// context without the mark is an in-process service-to-service call (an
// Event Streams deployment wrapping its DEK), which Key Protect exempts. A
// remoteAddr that does not parse is kept as "unknown", which no policy
// allows.
func WithClientAddr(ctx context.Context, remoteAddr string) context.Context {
	var o clientOrigin
	if ap, err := netip.ParseAddrPort(remoteAddr); err == nil {
		o.addr = ap.Addr()
	} else if a, err := netip.ParseAddr(remoteAddr); err == nil {
		o.addr = a
	}
	return context.WithValue(ctx, originKey{}, o)
}

// exemptFromAllowedIP marks a network call as one the policy does not apply
// to (Key Protect documents GET instance/allowed_ip_port as bypassing it).
func exemptFromAllowedIP(ctx context.Context) context.Context {
	o, ok := ctx.Value(originKey{}).(clientOrigin)
	if !ok {
		return ctx
	}
	o.exempt = true
	return context.WithValue(ctx, originKey{}, o)
}

// checkClientAddr refuses a network call to an instance whose enabled
// allowedIP policy does not list the caller's address.
func (s *Service) checkClientAddr(ctx context.Context, op, guid string) error {
	l, on := s.allowedIPOf(ctx, guid)
	if !on {
		return nil
	}
	o, network := ctx.Value(originKey{}).(clientOrigin)
	if !network || o.exempt || l.allows(o.addr) {
		return nil
	}
	return errs.E(op, errs.Unauthenticated, "UNAUTHORIZED_ERR",
		"The request is not from an IP address that the instance's allowedIP policy allows")
}

// AdmitClient is the API edge's gate: it refuses, and records, a network
// call to the instance from an address its allowedIP policy does not list,
// before the request's body is read. Calls it lets through are still checked
// by the service; a call it cannot place (no caller, unknown instance,
// another account) is left for the service to refuse in its own words, so
// the policy is never revealed to those who cannot address the instance.
func (s *Service) AdmitClient(ctx context.Context, action, guid string) error {
	const op = "kms.AdmitClient"
	if _, on := s.allowedIPOf(ctx, guid); !on {
		return nil
	}
	_, in, err := s.addressable(ctx, op, guid)
	if err != nil {
		return nil
	}
	if err := s.checkClientAddr(ctx, op, in.GUID); err != nil {
		s.recordFailure(ctx, action, instanceTarget(in), err)
		return err
	}
	return nil
}
