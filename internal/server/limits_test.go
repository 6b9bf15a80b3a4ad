package server

import (
	"errors"
	"net"
	"testing"
	"time"

	"golang.org/x/net/netutil"
)

func TestConnectionLimitsLeaveDescriptorsToOthers(t *testing.T) {
	for _, tc := range []struct {
		total, perSource int
		nofile           uint64
		want, wantPer    int
	}{
		{0, 0, 1 << 20, 1024, 256},  // plenty of descriptors: the default
		{0, 0, 0, 1024, 256},        // unknown limit
		{0, 0, 1024, 256, 64},       // a quarter of a low limit
		{0, 0, 64, 16, 16},          // small: one source may use them all
		{500, 0, 1024, 500, 125},    // the operator's word wins
		{500, 1000, 1024, 500, 500}, // never more per source than in all
		{100, 10, 1 << 20, 100, 10}, // both set
	} {
		total, per := connectionLimits(tc.total, tc.perSource, tc.nofile)
		if total != tc.want || per != tc.wantPer {
			t.Errorf("connectionLimits(%d, %d, %d) = %d, %d; want %d, %d", tc.total, tc.perSource, tc.nofile, total, per, tc.want, tc.wantPer)
		}
	}
}

// dialFrom connects to addr from the loopback address src.
func dialFrom(t *testing.T, src, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedByServer says whether the server closed c within d.
func closedByServer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// One address holding its share of the listener's slots does not keep
// another's connection waiting: its next one is closed at once, and a slot
// it gives back is its own again.
func TestOneSourceCannotTakeEverySlot(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := netutil.LimitListener(limitPerSource(inner, 2), 4)
	defer ln.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	addr := inner.Addr().String()
	next := func(what string) net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			t.Cleanup(func() { c.Close() })
			return c
		case <-time.After(30 * time.Second):
			t.Fatalf("%s was not accepted", what)
			return nil
		}
	}
	hostile := []net.Conn{dialFrom(t, "127.0.0.2", addr), dialFrom(t, "127.0.0.2", addr)}
	held := []net.Conn{next("the first"), next("the second")}
	extra := dialFrom(t, "127.0.0.2", addr)
	if !closedByServer(extra, 30*time.Second) {
		t.Fatal("a third connection from the same address was kept")
	}
	dialFrom(t, "127.0.0.1", addr)
	if c := next("another address's connection"); sourceOf(c.RemoteAddr()) != "127.0.0.1" {
		t.Fatalf("accepted %v, want the connection from 127.0.0.1", c.RemoteAddr())
	}
	held[0].Close()
	held[0].Close() // twice gives back one slot
	hostile[0].Close()
	dialFrom(t, "127.0.0.2", addr)
	next("a connection in the slot given back")
	if extra := dialFrom(t, "127.0.0.2", addr); !closedByServer(extra, 30*time.Second) {
		t.Fatal("closing a connection twice gave back two slots")
	}
}

func TestMemoryLimitSizesTheKafkaBudgets(t *testing.T) {
	const mib = 1 << 20
	got := withMemoryLimit(Config{MemoryLimit: 512 * mib, KafkaDeploymentRequestMemory: 10 * mib})
	if got.KafkaFetchMemory != 128*mib || got.KafkaDeploymentFetchMemory != 128*mib {
		t.Errorf("fetch budgets %d, %d; want a quarter of the limit for both", got.KafkaFetchMemory, got.KafkaDeploymentFetchMemory)
	}
	if got.KafkaRequestMemory != 64*mib || got.KafkaDeploymentRequestMemory != 10*mib {
		t.Errorf("request budgets %d, %d; want an eighth of the limit and the operator's own", got.KafkaRequestMemory, got.KafkaDeploymentRequestMemory)
	}
	got = withMemoryLimit(Config{MemoryLimit: 8 << 30})
	if got.KafkaFetchMemory != 2<<30 || got.KafkaDeploymentFetchMemory != 256*mib {
		t.Errorf("fetch budgets %d, %d under a large limit; want 2 GiB and the deployment default", got.KafkaFetchMemory, got.KafkaDeploymentFetchMemory)
	}
	if got := withMemoryLimit(Config{}); got.KafkaFetchMemory != 0 || got.KafkaRequestMemory != 0 {
		t.Errorf("without a limit the budgets were set: %d, %d", got.KafkaFetchMemory, got.KafkaRequestMemory)
	}
}
