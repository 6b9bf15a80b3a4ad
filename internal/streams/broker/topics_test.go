package broker

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
)

func TestKadmCreatesDescribesGrowsAndDeletesTopics(t *testing.T) {
	tb := startBroker(t, nil)
	adm := tb.admin(t, managerKey)
	ctx := testCtx(t)
	ms := "3600000"
	created, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{"retention.ms": &ms}, "metrics")
	if err != nil || created.Err != nil {
		t.Fatalf("create: %v %v", err, created.Err)
	}
	topics, err := adm.ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := topics["metrics"]; len(d.Partitions) != 2 || d.ID.String() == "" {
		t.Fatalf("listed topic %+v, want 2 partitions", d)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, "metrics")
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := rcs.On("metrics", nil)
	var got string
	for _, c := range rc.Configs {
		if c.Key == "retention.ms" {
			got = c.MaybeValue()
		}
	}
	if got != ms {
		t.Fatalf("retention.ms described as %q, want %q", got, ms)
	}
	if _, err := adm.UpdatePartitions(ctx, 4, "metrics"); err != nil {
		t.Fatal(err)
	}
	if info, _ := tb.Topic(ctx, "metrics"); info.Partitions != 4 {
		t.Fatalf("partitions after growing: %d, want 4", info.Partitions)
	}
	if _, err := adm.CommitOffsets(ctx, "dashboards", kadmOffsets("metrics", 1, 0)); err != nil {
		t.Fatal(err)
	}
	if resp, err := adm.DeleteTopic(ctx, "metrics"); err != nil || resp.Err != nil {
		t.Fatalf("delete: %v %v", err, resp.Err)
	}
	if len(tb.Topics(ctx)) != 0 {
		t.Fatal("topic still listed after delete")
	}
	if left := tb.groups.committedOffsets("dashboards"); len(left) != 0 {
		t.Fatalf("committed offsets of the deleted topic kept: %v", left)
	}
	for _, k := range tb.store.metaKeys() {
		if strings.Contains(k, "metrics") {
			t.Fatalf("storage key %q holds a topic name", k)
		}
	}
}

func TestCreateTopicRefusals(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "taken", 1)
	shred, compact := "shred", "compact"
	tests := []struct {
		name    string
		key     string
		topic   string
		configs map[string]*string
		want    error
	}{
		{"reader may not create", readerKey, "fresh", nil, kerr.TopicAuthorizationFailed},
		{"writer may not create", writerKey, "fresh", nil, kerr.TopicAuthorizationFailed},
		{"existing name", managerKey, "taken", nil, kerr.TopicAlreadyExists},
		{"bad name", managerKey, "no spaces", nil, kerr.InvalidTopicException},
		{"bad cleanup policy", managerKey, "fresh", map[string]*string{"cleanup.policy": &shred}, kerr.InvalidConfig},
		{"unknown config", managerKey, "fresh", map[string]*string{"unclean.leader.election.enable": &compact}, kerr.InvalidConfig},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tb.admin(t, tt.key).CreateTopic(testCtx(t), 1, 1, tt.configs, tt.topic)
			if err == nil {
				err = resp.Err
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
}

func TestAdminRESTManagesTopics(t *testing.T) {
	tb := startBroker(t, nil)
	srv := httptest.NewServer(tb.AdminHandler(adminTestAuth))
	defer srv.Close()
	do := func(method, path, token, body string) (int, map[string]any, []any) {
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v any
		json.NewDecoder(resp.Body).Decode(&v)
		obj, _ := v.(map[string]any)
		arr, _ := v.([]any)
		return resp.StatusCode, obj, arr
	}
	steps := []struct {
		name, method, path, token, body string
		status                          int
		check                           func(map[string]any, []any) bool
	}{
		{"create", "POST", "/admin/topics", "manager", `{"name":"clicks","partitions":3,"configs":[{"name":"retention.ms","value":"60000"}]}`, 202,
			func(o map[string]any, _ []any) bool { return o["name"] == "clicks" && o["partitions"] == 3.0 }},
		{"reader may not create", "POST", "/admin/topics", "reader", `{"name":"x"}`, 403,
			func(o map[string]any, _ []any) bool { return o["error_code"] == 403.0 && o["message"] != "" }},
		{"bad token", "GET", "/admin/topics", "nobody", "", 401, nil},
		{"duplicate", "POST", "/admin/topics", "manager", `{"name":"clicks"}`, 409, nil},
		{"bad config", "POST", "/admin/topics", "manager", `{"name":"c2","configs":[{"name":"cleanup.policy","value":"shred"}]}`, 400, nil},
		{"unknown field", "POST", "/admin/topics", "manager", `{"name":"c3","replicas":3}`, 400, nil},
		{"list", "GET", "/admin/topics", "reader", "", 200, func(_ map[string]any, a []any) bool { return len(a) == 1 }},
		{"get", "GET", "/admin/topics/clicks", "reader", "", 200,
			func(o map[string]any, _ []any) bool {
				return o["retentionMs"] == 60000.0 && o["cleanupPolicy"] == "delete"
			}},
		{"get missing", "GET", "/admin/topics/nope", "reader", "", 404, func(o map[string]any, _ []any) bool { return o["error_code"] == 404.0 }},
		{"reader may not delete", "DELETE", "/admin/topics/clicks", "reader", "", 403, nil},
		{"delete", "DELETE", "/admin/topics/clicks", "manager", "", 202, nil},
		{"list after delete", "GET", "/admin/topics", "reader", "", 200, func(_ map[string]any, a []any) bool { return len(a) == 0 }},
	}
	for _, s := range steps {
		status, obj, arr := do(s.method, s.path, s.token, s.body)
		if status != s.status || (s.check != nil && !s.check(obj, arr)) {
			t.Fatalf("%s: status %d body %v %v, want %d", s.name, status, obj, arr, s.status)
		}
	}
	if names := tb.Topics(t.Context()); slices.ContainsFunc(names, func(i TopicInfo) bool { return i.Name == "clicks" }) {
		t.Fatal("deleted topic still exists")
	}
}
