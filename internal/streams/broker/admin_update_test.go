package broker

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/IBM/sarama"
)

// adminTestAuth takes the bearer tokens "manager" and "reader".
func adminTestAuth(r *http.Request) (Access, error) {
	switch r.Header.Get("Authorization") {
	case "Bearer manager":
		return Manager, nil
	case "Bearer reader":
		return Reader, nil
	}
	return NoAccess, errors.New("no valid token")
}

func TestAdminRESTPatchChangesConfigsAndPartitions(t *testing.T) {
	tb := startBroker(t, nil)
	if _, err := tb.CreateTopic(t.Context(), "events", 1, map[string]string{"retention.ms": "60000"}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(tb.AdminHandler(adminTestAuth))
	defer srv.Close()
	patch := func(token, path, body string) (int, map[string]any) {
		req, _ := http.NewRequest("PATCH", srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v map[string]any
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, v
	}
	steps := []struct {
		name, token, path, body string
		status                  int
		mentions                string
	}{
		{"reader may not change", "reader", "/admin/topics/events", `{"configs":[{"name":"retention.ms","value":"1000"}]}`, 403, "manager"},
		{"unknown topic", "manager", "/admin/topics/nope", `{"configs":[]}`, 404, "does not exist"},
		{"bad value names the config", "manager", "/admin/topics/events", `{"configs":[{"name":"segment.ms","value":"1"}]}`, 400, "segment.ms"},
		{"unknown config", "manager", "/admin/topics/events", `{"configs":[{"name":"flush.messages","value":"1"}]}`, 400, "flush.messages"},
		{"a bad value with the partition count unchanged", "manager", "/admin/topics/events", `{"new_total_partition_count":0,"configs":[{"name":"retention.ms","value":"x"}]}`, 400, "retention.ms"},
		{"unknown field", "manager", "/admin/topics/events", `{"partitions":3}`, 400, ""},
		{"set, reset and grow", "manager", "/admin/topics/events",
			`{"new_total_partition_count":3,"configs":[{"name":"cleanup.policy","value":"compact"},{"name":"retention.ms","reset_to_default":true}]}`, 202, ""},
	}
	for _, s := range steps {
		status, body := patch(s.token, s.path, s.body)
		msg, _ := body["message"].(string)
		if status != s.status || !strings.Contains(strings.ToLower(msg), s.mentions) {
			t.Fatalf("%s: status %d body %v, want %d naming %q", s.name, status, body, s.status, s.mentions)
		}
	}
	info, err := tb.Topic(t.Context(), "events")
	if err != nil {
		t.Fatal(err)
	}
	if info.Partitions != 3 || len(info.Configs) != 1 || info.Configs["cleanup.policy"] != "compact" {
		t.Fatalf("after PATCH: %+v, want 3 partitions and only cleanup.policy=compact set", info)
	}
}

func TestSaramaDescribesAndAltersTopicConfigs(t *testing.T) {
	tb := startBroker(t, nil)
	adm, err := sarama.NewClusterAdmin([]string{tb.Addr().String()}, saramaConfig(managerKey))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	compact := "compact"
	if err := adm.CreateTopic("users", &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 3, ConfigEntries: map[string]*string{"cleanup.policy": &compact}}, false); err != nil {
		t.Fatal(err)
	}
	topic := sarama.ConfigResource{Type: sarama.TopicResource, Name: "users"}
	describe := func() map[string]sarama.ConfigEntry {
		entries, err := adm.DescribeConfig(topic)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]sarama.ConfigEntry{}
		for _, e := range entries {
			out[e.Name] = e
		}
		return out
	}
	got := describe()
	if e := got["cleanup.policy"]; e.Value != "compact" || e.Source != sarama.SourceTopic {
		t.Fatalf("cleanup.policy: %+v", e)
	}
	if e := got["max.message.bytes"]; e.Value != "1048588" || e.Source != sarama.SourceDefault {
		t.Fatalf("max.message.bytes: %+v", e)
	}
	ms := "120000"
	if err := adm.AlterConfig(sarama.TopicResource, "users", map[string]*string{"retention.ms": &ms}, false); err != nil {
		t.Fatal(err)
	}
	got = describe()
	if got["retention.ms"].Value != ms || got["cleanup.policy"].Value != "delete" {
		t.Fatalf("after AlterConfigs (which replaces all): retention.ms %+v cleanup.policy %+v", got["retention.ms"], got["cleanup.policy"])
	}
	lat := "LogAppendTime"
	err = adm.IncrementalAlterConfig(sarama.TopicResource, "users", map[string]sarama.IncrementalAlterConfigsEntry{
		"message.timestamp.type": {Operation: sarama.IncrementalAlterConfigsOperationSet, Value: &lat},
		"retention.ms":           {Operation: sarama.IncrementalAlterConfigsOperationDelete},
	}, false)
	if err != nil {
		t.Fatal(err)
	}
	got = describe()
	if got["message.timestamp.type"].Value != lat || got["retention.ms"].Source != sarama.SourceDefault {
		t.Fatalf("after IncrementalAlterConfigs: %+v %+v", got["message.timestamp.type"], got["retention.ms"])
	}
	bad := "-5"
	err = adm.AlterConfig(sarama.TopicResource, "users", map[string]*string{"retention.bytes": &bad}, false)
	if err == nil || !strings.Contains(err.Error(), "retention.bytes") {
		t.Fatalf("bad retention.bytes: %v", err)
	}
}

func TestPlanLimitsAreEnforced(t *testing.T) {
	tb := startBroker(t, nil, func(c *Config) {
		c.Limits = PlanLimits{MaxPartitions: 4, MaxMessageBytes: 1 << 20, MaxRetentionMs: 30 * 24 * 3600 * 1000, MaxRetentionBytes: 1 << 30}
	})
	adm := tb.admin(t, managerKey)
	if _, err := adm.CreateTopic(testCtx(t), 3, 3, nil, "first"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		do       func() (error, string)
		policy   bool
		mentions string
	}{
		{"partitions beyond the plan", func() (error, string) {
			r, err := adm.CreateTopic(testCtx(t), 2, 3, nil, "second")
			if err == nil {
				err = r.Err
			}
			return err, r.ErrMessage
		}, true, "partitions"},
		{"growing beyond the plan", func() (error, string) {
			rs, err := adm.CreatePartitions(testCtx(t), 2, "first")
			if err == nil {
				err = rs["first"].Err
			}
			return err, rs["first"].ErrMessage
		}, true, "partitions"},
		{"unlimited retention", func() (error, string) {
			r, err := adm.CreateTopic(testCtx(t), 1, 3, map[string]*string{"retention.ms": strp("-1")}, "second")
			if err == nil {
				err = r.Err
			}
			return err, r.ErrMessage
		}, false, "retention.ms"},
		{"message size above the plan", func() (error, string) {
			r, err := adm.CreateTopic(testCtx(t), 1, 3, map[string]*string{"max.message.bytes": strp("2000000")}, "second")
			if err == nil {
				err = r.Err
			}
			return err, r.ErrMessage
		}, false, "max.message.bytes"},
	}
	for _, tt := range tests {
		err, msg := tt.do()
		if err == nil || !strings.Contains(msg, tt.mentions) {
			t.Errorf("%s: %v %q, want a refusal naming %s", tt.name, err, msg, tt.mentions)
		}
		if tt.policy && !strings.Contains(err.Error(), "POLICY_VIOLATION") {
			t.Errorf("%s: %v, want POLICY_VIOLATION", tt.name, err)
		}
	}
	if _, err := adm.CreateTopic(testCtx(t), 1, 3, nil, "last"); err != nil {
		t.Fatalf("the plan's last partition: %v", err)
	}
}
