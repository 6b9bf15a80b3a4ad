package kms

import (
	"context"
	"net/netip"
	"testing"

	"github.com/keyline/keyline/internal/errs"
)

func TestAllowedIPPolicyMatchesClientAddress(t *testing.T) {
	network := func(remote string) context.Context { return WithClientAddr(context.Background(), remote) }
	tests := []struct {
		name    string
		cidrs   []string
		ctx     context.Context
		allowed bool
	}{
		{"IPv4 inside", []string{"10.0.0.0/8"}, network("10.1.2.3:51234"), true},
		{"IPv4 outside", []string{"10.0.0.0/8"}, network("127.0.0.1:51234"), false},
		{"IPv4 host route", []string{"192.0.2.7/32"}, network("192.0.2.7:443"), true},
		{"IPv4 next to a host route", []string{"192.0.2.7/32"}, network("192.0.2.8:443"), false},
		{"one of several", []string{"192.0.2.0/24", "127.0.0.0/8"}, network("127.0.0.1:9"), true},
		{"unmasked CIDR", []string{"10.9.9.9/8"}, network("10.200.0.1:1"), true},
		{"IPv6 inside", []string{"2001:db8::/32"}, network("[2001:db8:1::5]:8443"), true},
		{"IPv6 outside", []string{"2001:db8::/32"}, network("[2001:db9::5]:8443"), false},
		{"IPv6 loopback", []string{"::1/128"}, network("[::1]:40000"), true},
		{"IPv6 with zone", []string{"fe80::/10"}, network("[fe80::1%eth0]:40000"), true},
		{"IPv4-mapped client, IPv4 policy", []string{"10.0.0.0/8"}, network("[::ffff:10.1.2.3]:1"), true},
		{"IPv4-mapped client outside", []string{"10.0.0.0/8"}, network("[::ffff:11.1.2.3]:1"), false},
		{"IPv4 client, IPv4-mapped policy", []string{"::ffff:10.0.0.0/104"}, network("10.1.2.3:1"), true},
		{"IPv4 client, IPv6 policy", []string{"::/0"}, network("10.1.2.3:1"), false},
		{"IPv6 client, IPv4 policy", []string{"0.0.0.0/0"}, network("[2001:db8::1]:1"), false},
		{"bare address without port", []string{"10.0.0.0/8"}, network("10.0.0.1"), true},
		{"malformed remote address", []string{"0.0.0.0/0", "::/0"}, network("not-an-address"), false},
		{"empty remote address", []string{"0.0.0.0/0", "::/0"}, network(""), false},
		{"in-process call, no client address", []string{"10.0.0.0/8"}, context.Background(), true},
		{"allowed_ip_port bypasses the policy", []string{"10.0.0.0/8"}, exemptFromAllowedIP(network("127.0.0.1:1")), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := newIPAllowList(tc.cidrs)
			if err != nil {
				t.Fatal(err)
			}
			s := &Service{allowedIP: newAllowedIPIndex()}
			s.allowedIP.set("inst", l)
			err = s.checkClientAddr(tc.ctx, "test", "inst")
			if tc.allowed != (err == nil) {
				t.Fatalf("allowed = %v, err = %v", tc.allowed, err)
			}
			if err != nil && (errs.KindOf(err) != errs.Unauthenticated || errs.As(err).Code != "UNAUTHORIZED_ERR") {
				t.Fatalf("refusal = %v, want a 401 UNAUTHORIZED_ERR", err)
			}
			if err := s.checkClientAddr(tc.ctx, "test", "another-instance"); err != nil {
				t.Fatalf("an instance without the policy refused the call: %v", err)
			}
		})
	}
}

func TestAllowedIPPolicyFailsClosed(t *testing.T) {
	on, off := true, false
	tests := []struct {
		name    string
		data    InstancePolicyData
		enabled bool
	}{
		{"disabled policy puts nothing in force", InstancePolicyData{Enabled: &off, Attributes: &InstancePolicyAttr{AllowedIP: []string{"10.0.0.0/8"}}}, false},
		{"enabled policy with a bad CIDR allows no address", InstancePolicyData{Enabled: &on, Attributes: &InstancePolicyAttr{AllowedIP: []string{"10.0.0.0/8", "bogus"}}}, true},
		{"enabled policy without attributes allows no address", InstancePolicyData{Enabled: &on}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := allowListOf(tc.data)
			if (l != nil) != tc.enabled {
				t.Fatalf("in force = %v, want %v", l != nil, tc.enabled)
			}
			s := &Service{allowedIP: newAllowedIPIndex()}
			s.allowedIP.set("inst", l)
			err := s.checkClientAddr(WithClientAddr(context.Background(), "10.1.1.1:1"), "test", "inst")
			if tc.enabled && err == nil {
				t.Fatal("a broken enabled policy let a call through")
			}
			if !tc.enabled && err != nil {
				t.Fatalf("a disabled policy refused a call: %v", err)
			}
		})
	}
}

// BenchmarkAllowedIPCheck is the policy's cost on every call (wrap included):
// for an instance with no policy, and for one whose 64 CIDRs end with the
// caller's.
func BenchmarkAllowedIPCheck(b *testing.B) {
	cidrs := make([]string, 0, 64)
	for i := range 63 {
		cidrs = append(cidrs, netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16).String())
	}
	l, err := newIPAllowList(append(cidrs, "127.0.0.0/8"))
	if err != nil {
		b.Fatal(err)
	}
	s := &Service{allowedIP: newAllowedIPIndex()}
	s.allowedIP.set("with-policy", l)
	ctx := WithClientAddr(context.Background(), "127.0.0.1:50000")
	for _, guid := range []string{"no-policy", "with-policy"} {
		b.Run(guid, func(b *testing.B) {
			for b.Loop() {
				if err := s.checkClientAddr(ctx, "bench", guid); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
