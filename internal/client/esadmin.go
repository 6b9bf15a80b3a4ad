package client

import (
	"context"
	"net/url"
)

// Topic is a topic as the Event Streams admin REST API shows it.
type Topic struct {
	Name               string            `json:"name"`
	ID                 string            `json:"id"` // names the topic in Activity Tracker events
	Partitions         int32             `json:"partitions"`
	ReplicationFactor  int32             `json:"replicationFactor"`
	RetentionMs        int64             `json:"retentionMs"`
	CleanupPolicy      string            `json:"cleanupPolicy"`
	Configs            map[string]string `json:"configs"`
	ReplicaAssignments []struct {
		ID      int32 `json:"id"`
		Brokers struct {
			Replicas []int32 `json:"replicas"`
		} `json:"brokers"`
	} `json:"replicaAssignments"`
}

// TopicConfig is one config of a topic to create or update; Reset (update
// only) returns it to its default.
type TopicConfig struct {
	Name  string
	Value string
	Reset bool
}

// GroupSummary is a consumer group in a list.
type GroupSummary struct {
	GroupID string `json:"groupId"`
	State   string `json:"state"`
	Members int    `json:"members"`
}

// Group is a consumer group: its members and, per partition, the committed
// offset, the end of the log and the lag between them.
type Group struct {
	GroupID string `json:"groupId"`
	State   string `json:"state"`
	Members []struct {
		ConsumerID string `json:"consumerId"`
		ClientID   string `json:"clientId"`
		Host       string `json:"host"`
		Partitions []struct {
			Topic     string `json:"topic"`
			Partition int32  `json:"partition"`
		} `json:"partitions"`
	} `json:"members"`
	Offsets []struct {
		Topic         string `json:"topic"`
		Partition     int32  `json:"partition"`
		CurrentOffset int64  `json:"currentOffset"`
		EndOffset     int64  `json:"endOffset"`
		Lag           int64  `json:"lag"`
	} `json:"offsets"`
}

// EventStreamsAdmin calls one deployment's admin REST API
// (/messagehub/{guid}/admin/...).
type EventStreamsAdmin struct {
	c    *Client
	base string
}

// Admin returns the admin REST API of the Event Streams deployment guid.
func (c *Client) Admin(guid string) *EventStreamsAdmin {
	return &EventStreamsAdmin{c: c, base: Path("messagehub", guid, "admin")}
}

func (a *EventStreamsAdmin) do(ctx context.Context, method, path string, body, out any) error {
	return a.c.Do(ctx, Request{Method: method, Path: a.base + path, Body: body}, out)
}

// Topics lists the topics whose names match filter (a glob; "" for all).
func (a *EventStreamsAdmin) Topics(ctx context.Context, filter string) ([]Topic, error) {
	path := "/topics"
	if filter != "" {
		path += "?" + url.Values{"topic_filter": {filter}}.Encode()
	}
	var out []Topic
	return out, a.do(ctx, "GET", path, nil, &out)
}

// Topic reads one topic with its configs.
func (a *EventStreamsAdmin) Topic(ctx context.Context, name string) (*Topic, error) {
	var out Topic
	if err := a.do(ctx, "GET", Path("topics", name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateTopic creates a topic with partitions and configs.
func (a *EventStreamsAdmin) CreateTopic(ctx context.Context, name string, partitions int32, configs []TopicConfig) (*Topic, error) {
	cs := []map[string]string{}
	for _, c := range configs {
		cs = append(cs, map[string]string{"name": c.Name, "value": c.Value})
	}
	var out Topic
	if err := a.do(ctx, "POST", "/topics", map[string]any{"name": name, "partitions": partitions, "configs": cs}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateTopic changes configs and, when partitions is not 0, raises the
// partition count.
func (a *EventStreamsAdmin) UpdateTopic(ctx context.Context, name string, partitions int32, configs []TopicConfig) (*Topic, error) {
	cs := []map[string]any{}
	for _, c := range configs {
		if c.Reset {
			cs = append(cs, map[string]any{"name": c.Name, "reset_to_default": true})
		} else {
			cs = append(cs, map[string]any{"name": c.Name, "value": c.Value})
		}
	}
	body := map[string]any{"configs": cs}
	if partitions != 0 {
		body["new_total_partition_count"] = partitions
	}
	var out Topic
	if err := a.do(ctx, "PATCH", Path("topics", name), body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteTopic deletes a topic and its records.
func (a *EventStreamsAdmin) DeleteTopic(ctx context.Context, name string) error {
	return a.do(ctx, "DELETE", Path("topics", name), nil, nil)
}

// Groups lists the consumer groups.
func (a *EventStreamsAdmin) Groups(ctx context.Context) ([]GroupSummary, error) {
	var out []GroupSummary
	return out, a.do(ctx, "GET", "/consumergroups", nil, &out)
}

// Group describes one consumer group.
func (a *EventStreamsAdmin) Group(ctx context.Context, name string) (*Group, error) {
	var out Group
	if err := a.do(ctx, "GET", Path("consumergroups", name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteGroup deletes a consumer group without members.
func (a *EventStreamsAdmin) DeleteGroup(ctx context.Context, name string) error {
	return a.do(ctx, "DELETE", Path("consumergroups", name), nil, nil)
}

// GroupReset is one partition of an offset reset: where the group was and
// where the reset puts it.
type GroupReset struct {
	Topic         string `json:"topic"`
	Partition     int32  `json:"partition"`
	CurrentOffset int64  `json:"current_offset"`
	NewOffset     int64  `json:"new_offset"`
}

// ResetGroup moves a group's offsets on topic to the earliest or latest
// offset, a time (datetime) or an offset; without execute it only says
// what it would do.
func (a *EventStreamsAdmin) ResetGroup(ctx context.Context, group, topic, mode, value string, execute bool) ([]GroupReset, error) {
	var out []GroupReset
	body := map[string]any{"topic": topic, "mode": mode, "value": value, "execute": execute}
	return out, a.do(ctx, "PATCH", Path("consumergroups", group), body, &out)
}
