package e2e

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/server"
)

// A Keyline behind a name (or a proxy) must hand out credentials with that
// name, not the address it binds: clients elsewhere connect with them.
func TestCredentialsAdvertiseThePublicNames(t *testing.T) {
	_, port, _ := net.SplitHostPort(freePort(t))
	e := startIn(t, t.TempDir(), clock.NewFake(time.Now().UTC().Truncate(time.Second)), func(c *server.Config) {
		c.Listen = "127.0.0.1:" + port
		c.PublicURL = "http://localhost:" + port + "/"
		c.KafkaAdvertisedHost = "localhost"
	})
	if e.url != "http://localhost:"+port {
		t.Fatalf("the server's URL is %q, want the public URL without its trailing slash", e.url)
	}
	admin := e.as(e.admin)
	d := admin.provisionDeployment(admin.keyProtect("kp"), "es")
	for _, c := range []kafkaCreds{d.manager, d.writer, d.reader} {
		host, _, err := net.SplitHostPort(c.Brokers[0])
		if err != nil || host != "localhost" || len(c.Brokers) != 1 {
			t.Errorf("kafka_brokers_sasl = %v, want localhost:<port>", c.Brokers)
		}
		if !strings.HasPrefix(c.AdminURL, "http://localhost:"+port+"/messagehub/") {
			t.Errorf("kafka_admin_url = %q, want it under the public URL", c.AdminURL)
		}
	}
	// The advertised names work: the Kafka metadata a client gets back also
	// says localhost, and the admin REST API answers at the public URL.
	createTopic(t, d.manager, "orders", 1)
	cl := franz(t, d.writer)
	produceValues(t, cl, "orders", []string{"a", "b"})
	var topics []map[string]any
	if status := adminREST(t, d.manager, "GET", "/admin/topics", nil, &topics); status != 200 || len(topics) != 1 {
		t.Fatalf("admin REST at the public URL: %d %v", status, topics)
	}
}
