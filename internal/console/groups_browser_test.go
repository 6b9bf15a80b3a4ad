package console_test

import (
	"context"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

// kafkaManager is a franz-go client with Manager credentials of the
// deployment guid.
func (k *keyline) kafkaManager(guid string) *kgo.Client {
	k.t.Helper()
	var key struct {
		Credentials struct {
			Brokers []string `json:"kafka_brokers_sasl"`
			User    string   `json:"user"`
			APIKey  string   `json:"api_key"`
		} `json:"credentials"`
	}
	k.call("POST", "/v2/resource_keys", nil, map[string]any{"name": "console-kafka", "source": guid, "role": "Manager"}, &key)
	cl, err := kgo.NewClient(kgo.SeedBrokers(key.Credentials.Brokers...),
		kgo.SASL(plain.Auth{User: key.Credentials.User, Pass: key.Credentials.APIKey}.AsMechanism()), kgo.RetryTimeout(30*time.Second))
	if err != nil {
		k.t.Fatal(err)
	}
	k.t.Cleanup(cl.Close)
	return cl
}

// A topic's page shows its configs; a Manager changes one and raises the
// partitions there, and the admin API has the new values.
func TestTopicPageShowsAndEditsConfigs(t *testing.T) {
	k, b := signedInAdmin(t)
	kms := k.createKMS("topic-page-kp", "us-south")
	_, keyCRN := k.createKeyCRN(kms.GUID, "topic-page-key")
	k.authorize(k.account(), kms.GUID)
	dep := k.createDeployment("es-topic-page", keyCRN)
	k.call("POST", "/messagehub/"+dep.GUID+"/admin/topics", nil, map[string]any{"name": "invoices", "partitions": 2}, nil)

	b.open("/console/deployments/"+dep.GUID, "#topics-list")
	b.submit(`#topics-list tr[data-topic="invoices"] a[data-action="open-topic"]`, "#topic-form")
	if got := b.count("#partitions-list tbody tr"); got != 2 {
		t.Fatalf("the topic page lists %d partitions, want 2", got)
	}
	if got := get(b, "read retention.ms", chromedp.Evaluate[string](`document.getElementById("config-retention.ms").value`)); got != "604800000" {
		t.Fatalf("retention.ms shows %q", got)
	}
	b.shot("topic-page", 1280, 390)
	b.do("edit the topic",
		chromedp.SetValue(chromedp.CSS(`#topic-form input[name="config.retention.ms"]`), "3600000"),
		chromedp.SetValue(chromedp.ID("topic_partitions"), "3"))
	b.submit("#save-topic", ".notice.ok")
	b.contains(".notice.ok", "Topic invoices updated")
	b.contains(".pagehead .sub", "1 hour")
	var topic struct {
		Partitions int               `json:"partitions"`
		Configs    map[string]string `json:"configs"`
	}
	k.call("GET", "/messagehub/"+dep.GUID+"/admin/topics/invoices", nil, nil, &topic)
	if topic.Partitions != 3 || topic.Configs["retention.ms"] != "3600000" {
		t.Fatalf("after the edit the admin API has %+v", topic)
	}
	// An emptied field returns the config to its default.
	b.do("empty retention.ms", chromedp.Evaluate[chromedp.Void](`document.getElementById("config-retention.ms").value = ""`))
	b.submit("#save-topic", ".notice.ok")
	k.call("GET", "/messagehub/"+dep.GUID+"/admin/topics/invoices", nil, nil, &topic)
	if topic.Configs["retention.ms"] != "604800000" {
		t.Fatalf("after emptying retention.ms the admin API has %v", topic.Configs["retention.ms"])
	}
	// The partition field does not offer fewer partitions than there are.
	if got := get(b, "read min", chromedp.Evaluate[string](`document.getElementById("topic_partitions").min`)); got != "3" {
		t.Fatalf("the partitions field's minimum is %q, want 3", got)
	}
}

// The deployment page lists consumer groups; a group's page shows its lag
// per partition and deletes it once its name is typed. The group's name
// holds characters that URLs reserve.
func TestConsumerGroupsListedWithLagAndDeleted(t *testing.T) {
	k, b := signedInAdmin(t)
	kms := k.createKMS("groups-kp", "us-south")
	_, keyCRN := k.createKeyCRN(kms.GUID, "groups-key")
	k.authorize(k.account(), kms.GUID)
	dep := k.createDeployment("es-groups", keyCRN)
	k.call("POST", "/messagehub/"+dep.GUID+"/admin/topics", nil, map[string]any{"name": "clicks", "partitions": 1}, nil)

	cl := k.kafkaManager(dep.GUID)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, v := range []string{"a", "b", "c", "d"} {
		if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "clicks", Value: []byte(v)}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kadm.NewClient(cl).CommitOffsets(ctx, "reports/daily?", kadm.OffsetsFromRecords(kgo.Record{Topic: "clicks", Partition: 0, Offset: 0})); err != nil {
		t.Fatal(err)
	}

	b.open("/console/deployments/"+dep.GUID, "#groups-list")
	b.shot("deployment-groups", 1280, 390)
	b.submit(`#groups-list tr[data-group="reports/daily?"] a[data-action="open-group"]`, "#offsets-list")
	if got := b.text(`#offsets-list tr[data-partition="clicks/0"] td[data-lag]`); got != "3" {
		t.Fatalf("the lag of clicks/0 shows %q, want 3 (committed 1 of 4)", got)
	}
	b.contains("#group-lag", "3")
	b.shot("group-page", 1280, 390)

	b.submit("#delete-group", "#delete-group-dialog")
	b.contains("#delete-group-warning", "committed offsets are erased")
	b.shot("group-delete", 1280, 390)
	b.do("type the name", chromedp.SendKeys(chromedp.ID("confirm_group"), "reports/daily?"))
	b.submit("#delete-group-confirm", ".notice.ok")
	b.contains(".notice.ok", "Consumer group reports/daily? deleted")
	b.do("see the empty state", chromedp.WaitVisible(chromedp.ID("no-groups")))
}
