package e2e

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/oauth"
)

// TestCLIEventStreamsTopicsAndGroups drives every `keyline es` command with
// the built binary against a real deployment, a franz-go consumer group
// giving it lag to show.
func TestCLIEventStreamsTopicsAndGroups(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	dep := admin.provisionDeployment(admin.keyProtect("es-kp"), "es-cli")
	c := newCLI(t, e.url)
	c.must("login", "--apikey", adminKey)

	// Without an instance chosen, the command says how to choose one.
	if _, errOut, code := c.run("es", "topics"); code != 2 || !strings.Contains(errOut, "keyline es init") {
		t.Fatalf("es topics without an instance: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := c.run("es", "init", "-i", "es-kp"); code != 2 || !strings.Contains(errOut, "not Event Streams") {
		t.Fatalf("es init on a Key Protect instance: exit %d\n%s", code, errOut)
	}
	c.must("es", "init", "-i", "es-cli")

	out := c.must("es", "topic-create", "--name", "orders", "--partitions", "2", "--config", "retention.ms=3600000", "--config", "cleanup.policy=compact")
	if !strings.Contains(out, "orders") || !strings.Contains(out, "2 partitions") {
		t.Fatalf("topic-create:\n%s", out)
	}
	out = c.must("es", "topic", "orders")
	for _, want := range []string{"retention.ms", "3600000", "cleanup.policy", "compact", "Partition details", "Topic ID"} {
		if !strings.Contains(out, want) {
			t.Fatalf("es topic orders lacks %q:\n%s", want, out)
		}
	}
	c.must("es", "topic-update", "--name", "orders", "--config", "retention.ms=7200000", "--default", "cleanup.policy")
	var shown map[string]any
	if err := json.Unmarshal([]byte(c.must("es", "topic", "orders", "--json")), &shown); err != nil {
		t.Fatal(err)
	}
	configs := shown["configs"].(map[string]any)
	if configs["retention.ms"] != "7200000" || configs["cleanup.policy"] != "delete" {
		t.Fatalf("after topic-update: %v", configs)
	}
	c.must("es", "topic-partitions-set", "--name", "orders", "--partitions", "4")
	out = c.must("es", "topics", "--filter", "ord*")
	if !strings.Contains(out, "orders") || !strings.Contains(out, "   4   ") {
		t.Fatalf("es topics after partitions-set:\n%s", out)
	}
	// -i on the command wins over the chosen instance, by GUID as by name.
	if out := c.must("es", "topics", "-i", dep.guid); !strings.Contains(out, "orders") {
		t.Fatalf("es topics -i GUID:\n%s", out)
	}
	if _, errOut, code := c.run("es", "topic", "nope"); code != 3 || !strings.Contains(errOut, `topic "nope" does not exist`) {
		t.Fatalf("an unknown topic: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := c.run("es", "topic-update", "--name", "orders", "--config", "retention.ms"); code != 2 || !strings.Contains(errOut, "NAME=VALUE") {
		t.Fatalf("a config without a value: exit %d\n%s", code, errOut)
	}

	// A consumer group that commits 3 of 5 records has a lag of 2.
	produceValues(t, franz(t, dep.writer), "orders", []string{"a", "b", "c", "d", "e"})
	consumer := franz(t, dep.reader, kgo.ConsumerGroup("billing"), kgo.ConsumeTopics("orders"), kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	recs := consumeRecords(t, consumer, 5)
	byPartition := map[int32][]*kgo.Record{}
	for _, r := range recs {
		byPartition[r.Partition] = append(byPartition[r.Partition], r)
	}
	var commit []*kgo.Record
	var wantLag int64
	for _, rs := range byPartition {
		commit = append(commit, rs[0]) // offset 0 committed as 1: the rest is lag
		wantLag += int64(len(rs) - 1)
	}
	if err := consumer.CommitRecords(testCtx(t), commit...); err != nil {
		t.Fatal(err)
	}
	out = c.must("es", "groups")
	if !strings.Contains(out, "billing") {
		t.Fatalf("es groups:\n%s", out)
	}
	var group struct {
		State   string
		Members []map[string]any
		Offsets []struct {
			Topic                         string
			Partition                     int32
			CurrentOffset, EndOffset, Lag int64
		}
	}
	if err := json.Unmarshal([]byte(c.must("es", "group", "--group", "billing", "--output", "json")), &group); err != nil {
		t.Fatal(err)
	}
	var lag int64
	for _, o := range group.Offsets {
		if o.Topic != "orders" || o.Lag != o.EndOffset-o.CurrentOffset {
			t.Fatalf("offsets of billing: %+v", group.Offsets)
		}
		lag += o.Lag
	}
	if lag != wantLag || len(group.Members) != 1 || group.State != "Stable" {
		t.Fatalf("billing: state %s, %d members, lag %d, want Stable, 1, %d: %+v", group.State, len(group.Members), lag, wantLag, group)
	}
	if out := c.must("es", "group", "billing"); !strings.Contains(out, "Offset lag") || !strings.Contains(out, "orders/") {
		t.Fatalf("es group table:\n%s", out)
	}

	// A group with a live member is refused; once it leaves, it goes.
	_, errOut, code := c.run("es", "group-delete", "--group", "billing", "-f")
	if code != 1 || !strings.Contains(errOut, "NON_EMPTY_GROUP") {
		t.Fatalf("deleting a group with a member: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := c.run("es", "group-reset", "--group", "billing", "--topic", "orders", "--mode", "earliest", "--execute"); code != 1 || !strings.Contains(errOut, "NON_EMPTY_GROUP") {
		t.Fatalf("resetting a group with a member: exit %d\n%s", code, errOut)
	}
	consumer.Close()
	waitFor(t, 30*time.Second, "the group to be empty", func() bool {
		out, _, _ := c.run("es", "groups")
		return strings.Contains(out, "Empty")
	})
	// group-reset shows, then with --execute moves, the group's offsets.
	groupLag := func() (lag int64) {
		var g struct{ Offsets []struct{ Lag int64 } }
		json.Unmarshal([]byte(c.must("es", "group", "billing", "--json")), &g)
		for _, o := range g.Offsets {
			lag += o.Lag
		}
		return lag
	}
	if out := c.must("es", "group-reset", "--group", "billing", "--topic", "orders", "--mode", "earliest"); !strings.Contains(out, "Nothing was changed") {
		t.Fatalf("a reset preview:\n%s", out)
	}
	if got := groupLag(); got != wantLag {
		t.Fatalf("a preview changed the lag to %d", got)
	}
	c.must("es", "group-reset", "--group", "billing", "--topic", "orders", "--mode", "earliest", "--execute")
	if got := groupLag(); got != 5 {
		t.Fatalf("after a reset to the earliest offsets the lag is %d, want 5", got)
	}
	c.must("es", "group-reset", "--group", "billing", "--topic", "orders", "--mode", "datetime", "--value", time.Now().Add(time.Hour).Format(time.RFC3339), "--execute")
	if got := groupLag(); got != 0 {
		t.Fatalf("after a reset to a time after every record the lag is %d, want 0", got)
	}
	if _, errOut, code := c.run("es", "group-reset", "--group", "billing", "--topic", "orders", "--mode", "sideways"); code != 1 || !strings.Contains(errOut, "earliest, latest, datetime or offset") {
		t.Fatalf("a bad mode: exit %d\n%s", code, errOut)
	}
	if _, errOut, code := c.run("es", "group-delete", "--group", "billing"); code != 2 || !strings.Contains(errOut, "not a terminal") {
		t.Fatalf("group-delete without a terminal and -f: exit %d\n%s", code, errOut)
	}
	c.must("es", "group-delete", "--group", "billing", "-f")
	if _, _, code := c.run("es", "group", "billing"); code != 3 {
		t.Fatalf("a deleted group: exit %d, want 3", code)
	}

	// topic-delete: refused without a terminal, asks on one, -f skips.
	if _, errOut, code := c.run("es", "topic-delete", "--name", "orders"); code != 2 || !strings.Contains(errOut, "pass -f") {
		t.Fatalf("topic-delete without a terminal: exit %d\n%s", code, errOut)
	}
	if screen, code := c.runTTY("n", "es", "topic-delete", "--name", "orders"); code == 0 || !strings.Contains(screen, "Delete topic orders") {
		t.Fatalf("declined topic-delete: exit %d\n%s", code, screen)
	}
	c.must("es", "topic", "orders")
	c.must("es", "topic-delete", "--name", "orders", "-f")
	if _, _, code := c.run("es", "topic", "orders"); code != 3 {
		t.Fatalf("a deleted topic: exit %d, want 3", code)
	}
	if _, _, code := c.run("es", "topic-delete", "--name", "orders", "-f"); code != 3 {
		t.Fatalf("deleting a missing topic: exit %d, want 3", code)
	}
}

// TestTopicAndGroupChangesAreAudited: changes over Kafka and over the admin
// REST API, and refused attempts, each write one Activity Tracker event
// naming the principal, the deployment and the topic's id; topic and group
// names, sealed at rest, are in no event.
func TestTopicAndGroupChangesAreAudited(t *testing.T) {
	e := start(t)
	admin := e.as(e.admin)
	dep := admin.provisionDeployment(admin.keyProtect("at-kp"), "at-es")
	adm := kadm.NewClient(franz(t, dep.manager))
	ctx := testCtx(t)

	if resp, err := adm.CreateTopics(ctx, 1, 1, map[string]*string{"retention.ms": kadm.StringPtr("60000")}, "kafka-made"); err != nil || resp.Error() != nil {
		t.Fatalf("CreateTopics: %v %v", err, resp)
	}
	if resp, err := adm.AlterTopicConfigs(ctx, []kadm.AlterConfig{{Name: "retention.ms", Value: kadm.StringPtr("120000")}}, "kafka-made"); err != nil || resp[0].Err != nil {
		t.Fatalf("AlterTopicConfigs: %v %v", err, resp)
	}
	// Over OAUTHBEARER the principal is the token's.
	token := iamToken(t, e.url, dep.manager.APIKey)
	oauthCl, err := kgo.NewClient(kgo.SeedBrokers(dep.manager.Brokers...), kgo.RetryTimeout(10*time.Second),
		kgo.SASL(oauth.Oauth(func(context.Context) (oauth.Auth, error) { return oauth.Auth{Token: token}, nil })))
	if err != nil {
		t.Fatal(err)
	}
	defer oauthCl.Close()
	if resp, err := kadm.NewClient(oauthCl).CreateTopics(ctx, 1, 1, nil, "oauth-made"); err != nil || resp.Error() != nil {
		t.Fatalf("CreateTopics over OAUTHBEARER: %v %v", err, resp)
	}
	// A committed offset makes a group; DeleteGroups deletes it.
	if _, err := adm.CommitOffsets(ctx, "kafka-group", kadm.OffsetsFromRecords(kgo.Record{Topic: "kafka-made", Partition: 0, Offset: 0})); err != nil {
		t.Fatal(err)
	}
	if resp, err := adm.DeleteGroups(ctx, "kafka-group"); err != nil || resp.Error() != nil {
		t.Fatalf("DeleteGroups: %v %v", err, resp)
	}
	// A reader's attempt is refused, and audited as a failure.
	if resp, _ := kadm.NewClient(franz(t, dep.reader)).DeleteTopics(ctx, "kafka-made"); resp.Error() == nil {
		t.Fatal("a reader deleted a topic")
	}
	if code := adminREST(t, dep.manager, "POST", "/admin/topics", map[string]any{"name": "rest-made", "partitions": 1}, nil); code != 202 {
		t.Fatalf("POST /admin/topics: %d", code)
	}
	// Topics are named in events by their ids, which Kafka's metadata shows.
	ids := map[string]string{}
	details, err := adm.ListTopics(ctx, "kafka-made", "rest-made", "oauth-made")
	if err != nil {
		t.Fatal(err)
	}
	for name, d := range details {
		ids[name] = uuid.UUID(d.ID).String()
	}
	if len(ids) != 3 {
		t.Fatalf("topic ids: %v", ids)
	}
	if code := adminREST(t, dep.manager, "PATCH", "/admin/topics/rest-made", map[string]any{"configs": []any{map[string]any{"name": "retention.ms", "value": "90000"}}}, nil); code != 202 {
		t.Fatalf("PATCH /admin/topics/rest-made: %d", code)
	}
	if code := adminREST(t, dep.writer, "DELETE", "/admin/topics/rest-made", nil, nil); code != 403 {
		t.Fatalf("a writer's DELETE: %d", code)
	}
	if code := adminREST(t, dep.manager, "DELETE", "/admin/topics/rest-made", nil, nil); code != 202 {
		t.Fatalf("DELETE /admin/topics/rest-made: %d", code)
	}
	// An offset reset is a change once executed; its preview is not.
	reset := map[string]any{"topic": "kafka-made", "mode": "latest"}
	if code := adminREST(t, dep.manager, "PATCH", "/admin/consumergroups/rest-group", reset, nil); code != 200 {
		t.Fatalf("previewing a reset: %d", code)
	}
	reset["execute"] = true
	if code := adminREST(t, dep.manager, "PATCH", "/admin/consumergroups/rest-group", reset, nil); code != 200 {
		t.Fatalf("resetting offsets: %d", code)
	}
	stranger := dep.manager
	stranger.APIKey = "not-an-api-key"
	if code := adminREST(t, stranger, "DELETE", "/admin/topics/kafka-made", nil, nil); code != 401 {
		t.Fatalf("a DELETE with a wrong API key: %d", code)
	}
	if code := adminREST(t, dep.manager, "DELETE", "/admin/consumergroups/no-such-group", nil, nil); code != 404 {
		t.Fatalf("DELETE of a missing group: %d", code)
	}

	type want struct {
		action, name, outcome, via string
		code                       float64
	}
	wants := []want{
		{"event-streams.topic.create", ids["kafka-made"], "success", "kafka", 200},
		{"event-streams.topic.create", ids["oauth-made"], "success", "kafka", 200},
		{"event-streams.topic.update", ids["kafka-made"], "success", "kafka", 200},
		{"event-streams.group.delete", "", "success", "kafka", 200},
		{"event-streams.topic.delete", ids["kafka-made"], "failure", "kafka", 403},
		{"event-streams.topic.create", ids["rest-made"], "success", "rest", 202},
		{"event-streams.topic.update", ids["rest-made"], "success", "rest", 202},
		{"event-streams.topic.delete", ids["rest-made"], "failure", "rest", 403},
		{"event-streams.topic.delete", ids["rest-made"], "success", "rest", 202},
		{"event-streams.group.delete", "", "failure", "rest", 404},
		{"event-streams.group.update", "", "success", "rest", 200},
	}
	q := url.Values{"target": {dep.crn}, "limit": {"100"}}
	events := admin.must("GET", "/v1/audit/events?"+q.Encode(), nil, nil)["events"].([]any)
	for _, w := range wants {
		n := 0
		for _, ev := range events {
			ev := ev.(map[string]any)
			target, init := ev["target"].(map[string]any), ev["initiator"].(map[string]any)
			reason := ev["reason"].(map[string]any)
			rd, _ := ev["requestData"].(map[string]any)
			via := "rest"
			if rd["protocol"] == "kafka" {
				via = "kafka"
			}
			name, _ := target["name"].(string)
			if ev["action"] != w.action || name != w.name || ev["outcome"] != w.outcome || reason["reasonCode"] != w.code || via != w.via {
				continue
			}
			n++
			if target["id"] != dep.crn || !strings.HasPrefix(init["id"].(string), "iam-") {
				t.Errorf("%s of %s: target %v, initiator %v", w.action, w.name, target, init)
			}
			if w.outcome == "failure" && reason["reasonForFailure"] == "" {
				t.Errorf("%s of %s failed without a reason: %v", w.action, w.name, reason)
			}
		}
		if n != 1 {
			t.Errorf("%d events %+v, want 1; events:\n%s", n, w, dump(events))
		}
	}
	for _, name := range []string{"kafka-made", "oauth-made", "rest-made", "kafka-group", "no-such-group", "rest-group"} {
		if strings.Contains(dump(events), name) {
			t.Errorf("an event holds the name %s:\n%s", name, dump(events))
		}
	}
	// A caller who could not authenticate leaves no event to fill the trail.
	for _, ev := range events {
		if ev.(map[string]any)["reason"].(map[string]any)["reasonCode"] == float64(401) {
			t.Errorf("an unauthenticated call was recorded: %s", dump(ev))
		}
	}
}
