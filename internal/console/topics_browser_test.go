package console_test

import (
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

func TestTopicsAreCreatedListedAndDeletedFromTheDeploymentPage(t *testing.T) {
	k, b := signedInAdmin(t)
	manageTopics(t, k, b)
}

// manageTopics creates a topic from a deployment's page, checks it through
// the admin API, and deletes it through the confirmation dialog.
func manageTopics(t *testing.T, k *keyline, b *browser) {
	kms := k.createKMS("topics-kp", "us-south")
	_, keyCRN := k.createKeyCRN(kms.GUID, "topics-key")
	k.authorize(k.account(), kms.GUID)
	dep := k.createDeployment("es-topics", keyCRN)

	b.open("/console/deployments/"+dep.GUID, "#topics")
	// The empty state points to what exists: the form below and Kafka clients.
	if hint := b.text("#no-topics"); strings.Contains(hint, "keyline") || !strings.Contains(hint, "Create one below") {
		t.Fatalf("the empty Topics panel says %q", hint)
	}
	b.do("describe the topic",
		chromedp.SendKeys(chromedp.ID("topic_name"), "payments"),
		chromedp.SetValue(chromedp.ID("topic_partitions"), "3"),
		chromedp.SetValue(chromedp.ID("topic_retention"), "24"))
	b.submit("#create-topic", ".notice.ok")
	b.contains(".notice.ok", "Topic payments created")
	row := `#topics-list tr[data-topic="payments"] `
	if got := b.text(row + `td[data-label="Partitions"]`); got != "3" {
		t.Errorf("the new topic shows %s partitions", got)
	}
	b.contains(row+`td[data-label="Retention"]`, "1 day")

	// The admin API has it with those settings.
	var topics []struct {
		Name        string `json:"name"`
		Partitions  int    `json:"partitions"`
		RetentionMs int64  `json:"retentionMs"`
	}
	k.call("GET", "/messagehub/"+dep.GUID+"/admin/topics", nil, nil, &topics)
	if len(topics) != 1 || topics[0].Partitions != 3 || topics[0].RetentionMs != 24*3600_000 {
		t.Fatalf("the admin API lists %+v", topics)
	}
	b.shot("deployment-topics", 1280, 390)

	// Deleting asks first, and needs the topic's name typed.
	b.submit(row+`a[data-action="delete-topic"]`, "#delete-topic-dialog")
	b.contains("#delete-topic-warning", "cannot be undone")
	b.shot("topic-delete", 1280, 390)
	b.do("type the name", chromedp.SendKeys(chromedp.ID("confirm_topic"), "payments"))
	b.submit("#delete-topic-confirm", ".notice.ok")
	b.contains(".notice.ok", "Topic payments deleted")
	b.do("see the empty state", chromedp.WaitVisible(chromedp.ID("no-topics")))
	k.call("GET", "/messagehub/"+dep.GUID+"/admin/topics", nil, nil, &topics)
	if len(topics) != 0 {
		t.Fatalf("after the delete the admin API lists %+v", topics)
	}
}
