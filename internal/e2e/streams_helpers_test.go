package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/keyline/keyline/internal/client"
)

// kafkaCreds are the Event Streams service credentials of one resource key.
type kafkaCreds struct {
	KeyGUID  string // of the resource key
	Brokers  []string
	AdminURL string
	User     string
	APIKey   string
	// CAFile, when set, is the CA of the brokers' certificate: clients
	// speak SASL_SSL and trust it.
	CAFile string
}

// tlsConfig trusts c.CAFile (nil without one).
func (c kafkaCreds) tlsConfig(t testing.TB) *tls.Config {
	t.Helper()
	if c.CAFile == "" {
		return nil
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no certificate", c.CAFile)
	}
	return &tls.Config{RootCAs: pool}
}

// streamsDeployment is a messagehub instance provisioned with a Key
// Protect root key as its disk key, and credentials for each role.
type streamsDeployment struct {
	kpGUID, keyID, keyCRN string
	guid, crn             string
	manager, writer       kafkaCreds
	reader                kafkaCreds
}

// keyProtect makes a Key Protect instance that messagehub may use.
func (a *api) keyProtect(name string) string {
	a.t.Helper()
	account, _ := a.account()
	kp := a.createInstance(name, "kms", "tiered-pricing", "us-south", nil)
	guid := kp["guid"].(string)
	a.authorize(account, "messagehub", guid, false)
	return guid
}

// provisionDeployment creates a root key in kpGUID and an Event Streams
// deployment encrypted with it, then one resource key per role.
func (a *api) provisionDeployment(kpGUID, name string) streamsDeployment {
	a.t.Helper()
	d := streamsDeployment{kpGUID: kpGUID}
	d.keyID, d.keyCRN = a.createRootKey(kpGUID, name+"-key")
	inst := a.createInstance(name, "messagehub", "standard", "us-south", map[string]any{"disk_encryption_key_crn": d.keyCRN})
	if inst["state"] != "active" {
		a.t.Fatalf("deployment %s is %v: %s", name, inst["state"], dump(inst))
	}
	d.guid, d.crn = inst["guid"].(string), inst["crn"].(string)
	d.manager = a.credentials(d.guid, name+"-manager", "Manager")
	d.writer = a.credentials(d.guid, name+"-writer", "Writer")
	d.reader = a.credentials(d.guid, name+"-reader", "Reader")
	return d
}

// credentials creates a resource key with role on the deployment.
func (a *api) credentials(guid, name, role string) kafkaCreds {
	a.t.Helper()
	out := a.must("POST", "/v2/resource_keys", nil, map[string]any{"name": name, "source": guid, "role": role})
	c, ok := out["credentials"].(map[string]any)
	if !ok {
		a.t.Fatalf("resource key without credentials: %s", dump(out))
	}
	kc := kafkaCreds{KeyGUID: out["guid"].(string)}
	for _, b := range c["kafka_brokers_sasl"].([]any) {
		kc.Brokers = append(kc.Brokers, b.(string))
	}
	kc.AdminURL, _ = c["kafka_admin_url"].(string)
	kc.User, _ = c["user"].(string)
	kc.APIKey, _ = c["api_key"].(string)
	if len(kc.Brokers) == 0 || kc.AdminURL == "" || kc.User != "token" || kc.APIKey == "" {
		a.t.Fatalf("credentials are not in Event Streams' shape: %s", dump(c))
	}
	return kc
}

// deploymentInfo reads GET /messagehub/{guid}.
func (a *api) deploymentInfo(guid string) map[string]any {
	a.t.Helper()
	return a.must("GET", client.Path("messagehub", guid), nil, nil)
}

// franz is a franz-go client logged in with the credentials.
func franz(t testing.TB, c kafkaCreds, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	all := []kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.SASL(plain.Auth{User: c.User, Pass: c.APIKey}.AsMechanism()),
		kgo.RetryTimeout(10 * time.Second)}
	if tc := c.tlsConfig(t); tc != nil {
		all = append(all, kgo.DialTLSConfig(tc))
	}
	all = append(all, opts...)
	cl, err := kgo.NewClient(all...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// createTopic creates a topic through kadm as a manager.
func createTopic(t testing.TB, manager kafkaCreds, topic string, partitions int32) {
	t.Helper()
	resp, err := kadm.NewClient(franz(t, manager)).CreateTopics(testCtx(t), partitions, 1, nil, topic)
	if err == nil {
		err = resp.Error()
	}
	if err != nil {
		t.Fatalf("create topic: %v", err)
	}
}

// produceValues produces one record per value (keyed by index) and waits for
// every acknowledgement.
func produceValues(t testing.TB, cl *kgo.Client, topic string, values []string) {
	t.Helper()
	ctx := testCtx(t)
	for i, v := range values {
		r := &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: []byte(v)}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				t.Errorf("produce %s: %v", v, err)
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// numbered is n values "<prefix>-00000" ...
func numbered(prefix string, from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%05d", prefix, from+i)
	}
	return out
}

// consumeRecords polls cl until n records came, failing on fetch errors.
func consumeRecords(t testing.TB, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	ctx := testCtx(t)
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records", len(got), n)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		got = append(got, fs.Records()...)
	}
	return got
}

// values are the records' values, per partition in offset order, checking
// that offsets within a partition only grow.
func valuesOf(t testing.TB, rs []*kgo.Record) map[int32][]string {
	t.Helper()
	out := map[int32][]string{}
	last := map[int32]int64{}
	for _, r := range rs {
		if prev, ok := last[r.Partition]; ok && r.Offset <= prev {
			t.Fatalf("partition %d: offset %d after %d", r.Partition, r.Offset, prev)
		}
		last[r.Partition] = r.Offset
		out[r.Partition] = append(out[r.Partition], string(r.Value))
	}
	return out
}

// sameSet reports whether got holds exactly the values of want, once each.
func sameSet(got, want []string) error {
	seen := map[string]int{}
	for _, v := range got {
		seen[v]++
	}
	for _, v := range want {
		switch seen[v] {
		case 0:
			return fmt.Errorf("%q is missing (%d of %d values read)", v, len(got), len(want))
		case 1:
		default:
			return fmt.Errorf("%q was read %d times", v, seen[v])
		}
		delete(seen, v)
	}
	for v := range seen {
		return fmt.Errorf("%q was read but never produced here", v)
	}
	return nil
}

// saramaConfig is a sarama configuration logging in with the credentials.
func saramaConfig(c kafkaCreds) *sarama.Config {
	cfg := sarama.NewConfig()
	cfg.ClientID = "keyline-e2e"
	cfg.Net.SASL.Enable = true
	cfg.Net.SASL.Mechanism = sarama.SASLTypePlaintext
	cfg.Net.SASL.User, cfg.Net.SASL.Password = c.User, c.APIKey
	cfg.Producer.Return.Successes = true
	cfg.Producer.RequiredAcks = sarama.WaitForAll
	cfg.Consumer.Offsets.Initial = sarama.OffsetOldest
	cfg.Consumer.MaxWaitTime = 200 * time.Millisecond
	cfg.Metadata.Retry.Backoff = 50 * time.Millisecond
	cfg.Consumer.Group.Rebalance.Retry.Backoff = 100 * time.Millisecond
	return cfg
}

const kcatPath = "/usr/bin/kcat"

// kcat runs librdkafka's command line client with the credentials.
func kcat(t testing.TB, c kafkaCreds, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	if _, err := os.Stat(kcatPath); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("kcat is not installed; scripts/test installs it (apt-get install -y kcat)")
		}
		t.Skip("kcat is not installed (apt-get install -y kcat)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	base := []string{"-b", strings.Join(c.Brokers, ","), "-X", "sasl.mechanisms=PLAIN",
		"-X", "sasl.username=" + c.User, "-X", "sasl.password=" + c.APIKey}
	if c.CAFile != "" {
		base = append(base, "-X", "security.protocol=SASL_SSL", "-X", "ssl.ca.location="+c.CAFile)
	} else {
		base = append(base, "-X", "security.protocol=SASL_PLAINTEXT")
	}
	cmd := exec.CommandContext(ctx, kcatPath, append(base, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// adminREST calls the deployment's admin REST API with basic auth
// "token:<api key>" and decodes the JSON answer into out.
func adminREST(t testing.TB, c kafkaCreds, method, path string, body, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.AdminURL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(c.User, c.APIKey)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}
