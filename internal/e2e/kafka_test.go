package e2e

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestKafkaClients drives one deployment, provisioned through the API on a
// Keyline server, with franz-go, IBM/sarama and kcat, each logging in with
// credentials from POST /v2/resource_keys.
func TestKafkaClients(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	dep := admin.provisionDeployment(admin.keyProtect("clients-kp"), "clients")

	t.Run("franz-go", func(t *testing.T) { franzScenario(t, dep) })
	t.Run("sarama", func(t *testing.T) { saramaScenario(t, dep) })
	t.Run("kcat", func(t *testing.T) { kcatScenario(t, dep) })
	t.Run("admin REST", func(t *testing.T) { adminRESTScenario(t, dep) })
	t.Run("refused logins", func(t *testing.T) { refusedScenario(t, dep) })
}

func franzScenario(t *testing.T, dep streamsDeployment) {
	createTopic(t, dep.manager, "franz-orders", 4)

	// Idempotent (franz-go's default) produce, then a read from the start
	// that finds every record once, in order within each partition.
	prod := franz(t, dep.writer, kgo.DefaultProduceTopic("franz-orders"))
	first := numbered("order", 0, 200)
	produceValues(t, prod, "franz-orders", first)
	cons := franz(t, dep.reader, kgo.ConsumeTopics("franz-orders"), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	got := consumeRecords(t, cons, len(first))
	var all []string
	for p, vs := range valuesOf(t, got) {
		if !slices.IsSorted(vs) {
			t.Errorf("partition %d is out of produce order: %v", p, vs)
		}
		all = append(all, vs...)
	}
	if err := sameSet(all, first); err != nil {
		t.Fatal(err)
	}
	for _, r := range got {
		if r.ProducerID < 0 {
			t.Fatalf("record at %d/%d has no producer id: the produce was not idempotent", r.Partition, r.Offset)
		}
	}

	// A group: member A alone reads everything and commits; member B joins,
	// the group rebalances over both, and they share the next records.
	groupOpts := func(c kafkaCreds) *kgo.Client {
		return franz(t, c, kgo.ConsumerGroup("franz-group"), kgo.ConsumeTopics("franz-orders"),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.DisableAutoCommit())
	}
	a := groupOpts(dep.reader)
	if err := sameSet(recordValues(consumeRecords(t, a, len(first))), first); err != nil {
		t.Fatalf("member A alone: %v", err)
	}
	if err := a.CommitUncommittedOffsets(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	b := groupOpts(dep.reader)
	adm := kadm.NewClient(franz(t, dep.reader))
	var members []int
	waitFor(t, 30*time.Second, "the group to rebalance over two members", func() bool {
		pollOnce(a)
		pollOnce(b)
		groups, err := adm.DescribeGroups(testCtx(t), "franz-group")
		if err != nil {
			return false
		}
		g := groups["franz-group"]
		members = members[:0]
		for _, m := range g.Members {
			if ca, ok := m.Assigned.AsConsumer(); ok {
				n := 0
				for _, tp := range ca.Topics {
					n += len(tp.Partitions)
				}
				members = append(members, n)
			}
		}
		return g.State == "Stable" && len(members) == 2 && members[0] > 0 && members[1] > 0 && members[0]+members[1] == 4
	})
	second := numbered("order", 200, 80)
	produceValues(t, prod, "franz-orders", second)
	shared := consumeShared(t, second, a, b)
	if err := sameSet(shared, second); err != nil {
		t.Fatalf("two members after the rebalance: %v", err)
	}
	for _, cl := range []*kgo.Client{a, b} {
		if err := cl.CommitUncommittedOffsets(testCtx(t)); err != nil {
			t.Fatal(err)
		}
	}
	a.Close()
	b.Close()

	// A new member resumes at the committed offsets.
	third := numbered("order", 280, 20)
	produceValues(t, prod, "franz-orders", third)
	c := groupOpts(dep.reader)
	if err := sameSet(recordValues(consumeRecords(t, c, len(third))), third); err != nil {
		t.Fatalf("resumed member: %v", err)
	}

	// Topics are created and deleted with kadm.
	madm := kadm.NewClient(franz(t, dep.manager))
	if _, err := madm.CreateTopic(testCtx(t), 2, 1, nil, "franz-scratch"); err != nil {
		t.Fatal(err)
	}
	if topics, err := madm.ListTopics(testCtx(t), "franz-scratch"); err != nil || !topics.Has("franz-scratch") || len(topics["franz-scratch"].Partitions) != 2 {
		t.Fatalf("created topic not listed: %v %v", topics, err)
	}
	if resp, err := madm.DeleteTopics(testCtx(t), "franz-scratch"); err != nil || resp.Error() != nil {
		t.Fatalf("delete topic: %v %v", err, resp.Error())
	}
	if topics, _ := madm.ListTopics(testCtx(t)); topics.Has("franz-scratch") {
		t.Fatal("deleted topic is still listed")
	}
}

func recordValues(rs []*kgo.Record) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = string(r.Value)
	}
	return out
}

// pollOnce lets a group member take part in a rebalance.
func pollOnce(cl *kgo.Client) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	cl.PollFetches(ctx)
}

// consumeShared polls every member until together they read len(want)
// records.
func consumeShared(t *testing.T, want []string, members ...*kgo.Client) []string {
	t.Helper()
	ctx, cancel := context.WithCancel(testCtx(t))
	defer cancel()
	var mu sync.Mutex
	var got []string
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Go(func() {
			for ctx.Err() == nil {
				fs := m.PollFetches(ctx)
				mu.Lock()
				got = append(got, recordValues(fs.Records())...)
				if len(got) >= len(want) {
					cancel()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return got
}

func saramaScenario(t *testing.T, dep streamsDeployment) {
	addrs := dep.manager.Brokers
	adm, err := sarama.NewClusterAdmin(addrs, saramaConfig(dep.manager))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	if err := adm.CreateTopic("sarama-invoices", &sarama.TopicDetail{NumPartitions: 3, ReplicationFactor: 1}, false); err != nil {
		t.Fatal(err)
	}
	if err := adm.CreateTopic("sarama-scratch", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
		t.Fatal(err)
	}
	topics, err := adm.ListTopics()
	if err != nil || topics["sarama-invoices"].NumPartitions != 3 || topics["sarama-scratch"].NumPartitions != 1 {
		t.Fatalf("ListTopics: %v %+v", err, topics)
	}
	if err := adm.DeleteTopic("sarama-scratch"); err != nil {
		t.Fatal(err)
	}
	if topics, _ := adm.ListTopics(); topics["sarama-scratch"].NumPartitions != 0 {
		t.Fatal("deleted topic is still listed")
	}

	// Idempotent sync producer to fixed partitions.
	pcfg := saramaConfig(dep.writer)
	pcfg.Producer.Partitioner = sarama.NewManualPartitioner
	pcfg.Producer.Idempotent, pcfg.Net.MaxOpenRequests = true, 1
	prod, err := sarama.NewSyncProducer(addrs, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	defer prod.Close()
	send := func(values []string) {
		for i, v := range values {
			if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "sarama-invoices", Partition: int32(i % 3), Value: sarama.StringEncoder(v)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	first := numbered("invoice", 0, 60)
	send(first)

	// Consume partition 0 from the beginning: its records, in order.
	cons, err := sarama.NewConsumer(addrs, saramaConfig(dep.reader))
	if err != nil {
		t.Fatal(err)
	}
	defer cons.Close()
	pc, err := cons.ConsumePartition("sarama-invoices", 0, sarama.OffsetOldest)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for i := 0; i < len(first); i += 3 {
		select {
		case m := <-pc.Messages():
			if string(m.Value) != first[i] || m.Offset != int64(i/3) {
				t.Fatalf("partition 0 at %d: %q, want %q at offset %d", m.Offset, m.Value, first[i], i/3)
			}
		case err := <-pc.Errors():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("partition 0 was not read to the end")
		}
	}
	pc.Close()

	// A group of two members, then one that resumes at the commits.
	gcfg := saramaConfig(dep.reader)
	gcfg.Consumer.Offsets.AutoCommit.Interval = 50 * time.Millisecond
	h := &saramaHandler{seen: map[string]int{}, claims: map[string]int{}}
	g1 := runSaramaMember(t, addrs, gcfg, "m1", h)
	h.waitFor(t, first)
	g2 := runSaramaMember(t, addrs, gcfg, "m2", h)
	waitFor(t, 30*time.Second, "both sarama members to hold partitions", func() bool { return h.holders() == 2 })
	second := numbered("invoice", 60, 30)
	send(second)
	h.waitFor(t, append(slices.Clone(first), second...))
	g1.stop()
	g2.stop()
	if dup := h.duplicates(); dup != "" {
		t.Fatalf("a record was delivered twice to the group: %s", dup)
	}
	third := numbered("invoice", 90, 9)
	send(third)
	h3 := &saramaHandler{seen: map[string]int{}, claims: map[string]int{}}
	g3 := runSaramaMember(t, addrs, gcfg, "m3", h3)
	h3.waitFor(t, third)
	g3.stop()
	if err := sameSet(h3.values(), third); err != nil {
		t.Fatalf("the resumed member: %v", err)
	}
}

// saramaHandler records what a group's members consumed and which member
// holds partitions.
type saramaHandler struct {
	mu     sync.Mutex
	seen   map[string]int
	claims map[string]int // member -> partitions held now
}

type memberCtxKey struct{}

func (h *saramaHandler) Setup(s sarama.ConsumerGroupSession) error {
	n := 0
	for _, ps := range s.Claims() {
		n += len(ps)
	}
	h.mu.Lock()
	h.claims[s.Context().Value(memberCtxKey{}).(string)] = n
	h.mu.Unlock()
	return nil
}

func (h *saramaHandler) Cleanup(s sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	h.claims[s.Context().Value(memberCtxKey{}).(string)] = 0
	h.mu.Unlock()
	return nil
}

func (h *saramaHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		h.mu.Lock()
		h.seen[string(m.Value)]++
		h.mu.Unlock()
		s.MarkMessage(m, "")
	}
	return nil
}

func (h *saramaHandler) holders() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.claims {
		if c > 0 {
			n++
		}
	}
	return n
}

func (h *saramaHandler) values() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for v, n := range h.seen {
		for range n {
			out = append(out, v)
		}
	}
	return out
}

func (h *saramaHandler) duplicates() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for v, n := range h.seen {
		if n > 1 {
			return v
		}
	}
	return ""
}

func (h *saramaHandler) waitFor(t *testing.T, want []string) {
	t.Helper()
	waitFor(t, 30*time.Second, fmt.Sprintf("the group to read %d records", len(want)), func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, v := range want {
			if h.seen[v] == 0 {
				return false
			}
		}
		return true
	})
}

type saramaMember struct {
	cancel context.CancelFunc
	done   chan struct{}
	group  sarama.ConsumerGroup
}

func (m *saramaMember) stop() {
	m.cancel()
	<-m.done
	m.group.Close() // commits what was marked
}

func runSaramaMember(t *testing.T, addrs []string, cfg *sarama.Config, name string, h *saramaHandler) *saramaMember {
	t.Helper()
	g, err := sarama.NewConsumerGroup(addrs, "sarama-group", cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), memberCtxKey{}, name))
	m := &saramaMember{cancel: cancel, done: make(chan struct{}), group: g}
	go func() {
		defer close(m.done)
		for ctx.Err() == nil {
			if err := g.Consume(ctx, []string{"sarama-invoices"}, h); err != nil && ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-m.done:
		default:
			m.stop()
		}
	})
	return m
}

func kcatScenario(t *testing.T, dep streamsDeployment) {
	createTopic(t, dep.manager, "kcat-telemetry", 2)
	out, _, err := kcat(t, dep.reader, "", "-L", "-t", "kcat-telemetry")
	if err != nil || !strings.Contains(out, `topic "kcat-telemetry" with 2 partitions`) {
		t.Fatalf("kcat -L: %v\n%s", err, out)
	}
	first := numbered("reading", 0, 40)
	if _, errOut, err := kcat(t, dep.writer, strings.Join(first, "\n")+"\n", "-P", "-t", "kcat-telemetry", "-X", "enable.idempotence=true"); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, errOut)
	}
	out, errOut, err := kcat(t, dep.reader, "", "-C", "-t", "kcat-telemetry", "-o", "beginning", "-e", "-f", "%s\n")
	if err != nil {
		t.Fatalf("kcat -C: %v\n%s", err, errOut)
	}
	if err := sameSet(strings.Fields(out), first); err != nil {
		t.Fatalf("kcat -C from the beginning: %v", err)
	}

	// Two balanced consumers in one group share the partitions; a third run
	// resumes after what they committed on exit.
	group := func() ([]string, error) {
		out, errOut, err := kcat(t, dep.reader, "", "-G", "kcat-group", "-X", "auto.offset.reset=earliest", "-e", "-f", "%s\n", "kcat-telemetry")
		if err != nil {
			return nil, fmt.Errorf("%v: %s", err, errOut)
		}
		return strings.Fields(out), nil
	}
	var mu sync.Mutex
	var both []string
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	for range 2 {
		wg.Go(func() {
			vs, err := group()
			if err != nil {
				errc <- err
				return
			}
			mu.Lock()
			both = append(both, vs...)
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatalf("kcat -G: %v", err)
	}
	if err := sameSet(both, first); err != nil {
		t.Fatalf("two kcat members: %v", err)
	}
	second := numbered("reading", 40, 10)
	if _, errOut, err := kcat(t, dep.writer, strings.Join(second, "\n")+"\n", "-P", "-t", "kcat-telemetry"); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, errOut)
	}
	resumed, err := group()
	if err != nil {
		t.Fatal(err)
	}
	if err := sameSet(resumed, second); err != nil {
		t.Fatalf("kcat -G resuming: %v", err)
	}
}

func adminRESTScenario(t *testing.T, dep streamsDeployment) {
	var created map[string]any
	body := map[string]any{"name": "rest-topic", "partitions": 3}
	if code := adminREST(t, dep.manager, "POST", "/admin/topics", body, &created); code != 202 && code != 201 && code != 200 {
		t.Fatalf("POST /admin/topics: %d %v", code, created)
	}
	var listed []map[string]any
	if code := adminREST(t, dep.reader, "GET", "/admin/topics", nil, &listed); code != 200 {
		t.Fatalf("GET /admin/topics: %d", code)
	}
	if !slices.ContainsFunc(listed, func(m map[string]any) bool { return m["name"] == "rest-topic" && m["partitions"] == float64(3) }) {
		t.Fatalf("the created topic is not listed: %v", listed)
	}
	// Kafka clients see it at once.
	topics, err := kadm.NewClient(franz(t, dep.reader)).ListTopics(testCtx(t), "rest-topic")
	if err != nil || len(topics["rest-topic"].Partitions) != 3 {
		t.Fatalf("metadata of the REST-created topic: %v %v", err, topics)
	}
	var refused map[string]any
	if code := adminREST(t, dep.reader, "DELETE", "/admin/topics/rest-topic", nil, &refused); code != 403 {
		t.Fatalf("a reader deleting a topic: %d %v, want 403", code, refused)
	}
	if code := adminREST(t, dep.manager, "DELETE", "/admin/topics/rest-topic", nil, nil); code != 202 && code != 200 && code != 204 {
		t.Fatalf("DELETE /admin/topics/rest-topic: %d", code)
	}
	if code := adminREST(t, dep.reader, "GET", "/admin/topics/rest-topic", nil, nil); code != 404 {
		t.Fatalf("GET a deleted topic: %d, want 404", code)
	}
	wrong := dep.manager
	wrong.APIKey = "not-an-api-key"
	if code := adminREST(t, wrong, "GET", "/admin/topics", nil, nil); code != 401 {
		t.Fatalf("admin REST with a wrong API key: %d, want 401", code)
	}
}

func refusedScenario(t *testing.T, dep streamsDeployment) {
	createTopic(t, dep.manager, "guarded", 1)
	wrong := dep.writer
	wrong.APIKey = "wrong-" + dep.writer.APIKey[:8]

	t.Run("wrong API key", func(t *testing.T) {
		err := franz(t, wrong, kgo.RetryTimeout(time.Second)).Ping(testCtx(t))
		if err == nil || !strings.Contains(err.Error(), "API key is not valid") {
			t.Errorf("franz-go login with a wrong key: %v", err)
		}
		cfg := saramaConfig(wrong)
		cfg.Metadata.Retry.Max = 0
		if _, err := sarama.NewClient(wrong.Brokers, cfg); err == nil || !errors.Is(err, sarama.ErrSASLAuthenticationFailed) && !strings.Contains(err.Error(), "API key is not valid") {
			t.Errorf("sarama login with a wrong key: %v", err)
		}
		if _, errOut, err := kcat(t, wrong, "", "-L", "-m", "5"); err == nil || !strings.Contains(errOut, "API key is not valid") {
			t.Errorf("kcat -L with a wrong key: %v %s", err, errOut)
		}
	})
	t.Run("reader may not produce", func(t *testing.T) {
		cl := franz(t, dep.reader, kgo.DefaultProduceTopic("guarded"), kgo.DisableIdempotentWrite())
		if err := cl.ProduceSync(testCtx(t), &kgo.Record{Value: []byte("x")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
			t.Errorf("franz-go produce as a reader: %v, want TOPIC_AUTHORIZATION_FAILED", err)
		}
		prod, err := sarama.NewSyncProducer(dep.reader.Brokers, saramaConfig(dep.reader))
		if err != nil {
			t.Fatal(err)
		}
		defer prod.Close()
		if _, _, err := prod.SendMessage(&sarama.ProducerMessage{Topic: "guarded", Value: sarama.StringEncoder("x")}); !errors.Is(err, sarama.ErrTopicAuthorizationFailed) {
			t.Errorf("sarama produce as a reader: %v, want TOPIC_AUTHORIZATION_FAILED", err)
		}
		_, errOut, _ := kcat(t, dep.reader, "x\n", "-P", "-t", "guarded")
		if !strings.Contains(strings.ToLower(errOut), "authorization") {
			t.Errorf("kcat -P as a reader did not report the refusal: %s", errOut)
		}
		end, err := kadm.NewClient(franz(t, dep.reader)).ListEndOffsets(testCtx(t), "guarded")
		if o, _ := end.Lookup("guarded", 0); err != nil || o.Offset != 0 {
			t.Errorf("a refused produce stored something: end offset %d (%v)", o.Offset, err)
		}
	})
}
