package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/tlstest"
)

// TestServeOverTLS runs `keyline serve --tls-cert --tls-key` as a process:
// the CLI, the APIs, the console and Kafka clients (franz-go and kcat over
// SASL_SSL) work when they trust its CA and fail in plain text, and a
// certificate rotated on disk is served without a restart.
func TestServeOverTLS(t *testing.T) {
	certs := t.TempDir()
	pair := tlstest.Issue(t, certs, "keyline", "127.0.0.1", "localhost")
	// The certificate from a flag, its key from the environment.
	p := serveProcessWith(t, filepath.Join(t.TempDir(), "data"), serveOptions{
		args: []string{"--tls-cert", pair.CertFile}, env: []string{"KEYLINE_TLS_KEY=" + pair.KeyFile}, ca: pair.Pool()})
	if !strings.HasPrefix(p.url, "https://") || !strings.Contains(p.logs(), "Keyline is serving on "+p.url) ||
		!strings.Contains(p.logs(), "keyline login -a "+p.url) {
		t.Fatalf("the startup lines do not show %s:\n%s", p.url, p.logs())
	}
	addr := strings.TrimPrefix(p.url, "https://")

	t.Run("plain HTTP is refused", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusBadRequest || string(body) == "ok\n" {
				t.Fatalf("plain HTTP answered %d %q", resp.StatusCode, body)
			}
		}
	})

	t.Run("CLI", func(t *testing.T) {
		c := newCLI(t, p.url)
		_, errOut, code := c.run("login", "--apikey", adminKey)
		if code != 1 || !strings.Contains(errOut, "--cacert") || !strings.Contains(errOut, "certificate") {
			t.Fatalf("login without the CA: exit %d, want 1 with advice to pass --cacert:\n%s", code, errOut)
		}
		_, errOut, code = c.run("login", "-a", "http://"+addr, "--apikey", adminKey, "--cacert", pair.CertFile)
		if code != 1 || !strings.Contains(errOut, "use an https:// endpoint") {
			t.Fatalf("login over plain HTTP: exit %d, want 1 with advice to use https:\n%s", code, errOut)
		}
		c.must("login", "--apikey", adminKey, "--cacert", pair.CertFile)
		// Later commands trust the CA login remembered.
		var kp map[string]any
		json.Unmarshal([]byte(c.must("resource", "service-instance-create", "tls-kp", "kms", "tiered-pricing", "us-south", "--output", "json")), &kp)
		guid, _ := kp["guid"].(string)
		if guid == "" {
			t.Fatalf("service-instance-create printed no guid: %v", kp)
		}
		c.must("kp", "key", "create", "tls-root-key", "-i", guid)
		if out := c.must("kp", "keys", "-i", "tls-kp"); !strings.Contains(out, "tls-root-key") {
			t.Fatalf("kp keys:\n%s", out)
		}

		// SSL_CERT_FILE names the CA for clients that did not log in with --cacert.
		viaEnv := newCLI(t, p.url)
		viaEnv.env = []string{"SSL_CERT_FILE=" + pair.CertFile}
		viaEnv.must("login", "--apikey", adminKey)
		if out := viaEnv.must("kp", "keys", "-i", "tls-kp"); !strings.Contains(out, "tls-root-key") {
			t.Fatalf("kp keys with SSL_CERT_FILE:\n%s", out)
		}
	})

	admin := client.New(p.url, adminKey)
	admin.HTTP.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pair.Pool()}}
	a := &api{t: t, c: admin}
	dep := a.provisionDeployment(a.keyProtect("tls-streams-kp"), "tls-es")
	for _, c := range []*kafkaCreds{&dep.manager, &dep.writer, &dep.reader} {
		if !strings.HasPrefix(c.AdminURL, p.url+"/messagehub/") {
			t.Fatalf("kafka_admin_url %q is not on %s", c.AdminURL, p.url)
		}
		c.CAFile = pair.CertFile
	}

	t.Run("Kafka over SASL_SSL", func(t *testing.T) {
		createTopic(t, dep.manager, "secure", 1)
		fromFranz := numbered("franz", 0, 20)
		produceValues(t, franz(t, dep.writer), "secure", fromFranz)
		consumer := franz(t, dep.reader, kgo.ConsumeTopics("secure"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		var got []string
		for _, r := range consumeRecords(t, consumer, len(fromFranz)) {
			got = append(got, string(r.Value))
		}
		if err := sameSet(got, fromFranz); err != nil {
			t.Fatalf("franz-go consumed over SASL_SSL: %v", err)
		}
		fromKcat := numbered("kcat", 0, 20)
		if _, errOut, err := kcat(t, dep.writer, strings.Join(fromKcat, "\n")+"\n", "-P", "-t", "secure"); err != nil {
			t.Fatalf("kcat -P over SASL_SSL: %v\n%s", err, errOut)
		}
		all := append(fromFranz, fromKcat...)
		out, errOut, err := kcat(t, dep.reader, "", "-C", "-t", "secure", "-o", "beginning", "-e", "-f", "%s\n")
		if err != nil {
			t.Fatalf("kcat -C over SASL_SSL: %v\n%s", err, errOut)
		}
		if err := sameSet(strings.Fields(out), all); err != nil {
			t.Fatalf("kcat consumed over SASL_SSL: %v", err)
		}
	})

	t.Run("plaintext Kafka is refused", func(t *testing.T) {
		plain := dep.reader
		plain.CAFile = ""
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := franz(t, plain).Ping(ctx); err == nil {
			t.Fatal("a SASL_PLAINTEXT franz-go client reached the broker")
		}
		if _, _, err := kcat(t, plain, "", "-L", "-m", "3"); err == nil {
			t.Fatal("a SASL_PLAINTEXT kcat listed the broker's metadata")
		}
	})

	t.Run("console cookies are Secure", func(t *testing.T) {
		hc := &http.Client{
			Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pair.Pool()}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		resp, err := hc.Get(p.url + "/console/signin")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		m := regexp.MustCompile(`name="csrf_token" value="([^"]+)"`).FindSubmatch(page)
		if m == nil {
			t.Fatalf("no CSRF token on the sign-in page:\n%s", page)
		}
		req, _ := http.NewRequest("POST", p.url+"/console/signin", strings.NewReader(url.Values{"csrf_token": {string(m[1])}, "apikey": {adminKey}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, ck := range resp.Cookies() {
			req.AddCookie(ck)
		}
		signed, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		signed.Body.Close()
		var session *http.Cookie
		for _, ck := range signed.Cookies() {
			if ck.Name == "keyline_session" {
				session = ck
			}
		}
		if signed.StatusCode != http.StatusSeeOther || session == nil {
			t.Fatalf("sign-in answered %d with cookies %v", signed.StatusCode, signed.Cookies())
		}
		if !session.Secure || !session.HttpOnly {
			t.Fatalf("session cookie %+v is not Secure and HttpOnly", session)
		}
	})

	t.Run("a rotated certificate is served without a restart", func(t *testing.T) {
		next := tlstest.Issue(t, certs, "keyline", "127.0.0.1", "localhost")
		for _, target := range []string{addr, dep.reader.Brokers[0]} {
			conn, err := tls.Dial("tcp", target, &tls.Config{RootCAs: next.Pool(), ServerName: "127.0.0.1"})
			if err != nil {
				t.Fatalf("%s after rotation: %v", target, err)
			}
			leaf := conn.ConnectionState().PeerCertificates[0]
			conn.Close()
			if leaf.SerialNumber.Cmp(next.Cert.SerialNumber) != 0 {
				t.Fatalf("%s serves serial %s, want the rotated %s", target, leaf.SerialNumber, next.Cert.SerialNumber)
			}
		}
	})
}
