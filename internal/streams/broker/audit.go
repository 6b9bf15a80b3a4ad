package broker

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Change is one change of a topic or consumer group, made over Kafka or the
// admin REST API, for the Activity Tracker. It names what was changed and
// how it ended, never the records or the configs' values.
type Change struct {
	// Action is the Activity Tracker action below "event-streams.":
	// topic.create, topic.update, topic.delete, group.update (an offset
	// reset over REST), group.delete, group-offset.delete, message.delete
	// (DeleteRecords) or quota.update (AlterClientQuotas).
	Action string
	// Kind is "topic", "group" or "quota"; Name is the topic's or group's
	// name, or the quota's entity ("user=<name>,client-id=<default>"),
	// which is customer data, sealed at rest like the records: a recorder
	// must not store it in plain. TopicID is the topic's id when the topic
	// exists (or existed until this change).
	Kind, Name string
	TopicID    string
	// Status is the outcome as an HTTP status (200 or 202, 400, 403, 404,
	// 409, 500); Reason says why it failed.
	Status int
	Reason string
	// Over Kafka: the connection's login, so that the recorder can name
	// the principal (the password is the API key; it stays in memory, as
	// in the session), and the client's address. Over REST, Request is the
	// call, whose context holds what its authentication learnt.
	Login   *KafkaLogin
	Request *http.Request
}

// KafkaLogin is the SASL login of the connection that made a change:
// Password is the API key (PLAIN) or the IAM access token (OAUTHBEARER).
type KafkaLogin struct {
	Mechanism      string
	User, Password string
	Addr           string
}

// ChangeRecorder writes a Change to the Activity Tracker. It is called
// before the change is answered, as the other services audit theirs.
type ChangeRecorder func(ctx context.Context, ch Change)

// recordChanges audits the topic and group changes of one Kafka request.
// Every other request (produce and fetch among them) leaves at the type
// switch's default.
func (c *conn) recordChanges(kreq kmsg.Request, resp kmsg.Response) {
	rec := c.b.cfg.Audit
	if rec == nil || resp == nil {
		return
	}
	var changes []Change
	add := func(action, kind, name string, code int16, msg *string) {
		changes = append(changes, kafkaChange(action, kind, name, code, msg))
	}
	switch r := resp.(type) {
	case *kmsg.CreateTopicsResponse:
		if kreq.(*kmsg.CreateTopicsRequest).ValidateOnly {
			return
		}
		for _, t := range r.Topics {
			add("topic.create", "topic", t.Topic, t.ErrorCode, t.ErrorMessage)
			if t.ErrorCode == 0 {
				changes[len(changes)-1].TopicID = uuid.UUID(t.TopicID).String()
			}
		}
	case *kmsg.DeleteTopicsResponse:
		for _, t := range r.Topics {
			name := ""
			if t.Topic != nil {
				name = *t.Topic
			}
			add("topic.delete", "topic", name, t.ErrorCode, t.ErrorMessage)
			if t.TopicID != [16]byte{} {
				changes[len(changes)-1].TopicID = uuid.UUID(t.TopicID).String()
			}
		}
	case *kmsg.CreatePartitionsResponse:
		if kreq.(*kmsg.CreatePartitionsRequest).ValidateOnly {
			return
		}
		for _, t := range r.Topics {
			add("topic.update", "topic", t.Topic, t.ErrorCode, t.ErrorMessage)
		}
	case *kmsg.AlterConfigsResponse:
		if kreq.(*kmsg.AlterConfigsRequest).ValidateOnly {
			return
		}
		for _, res := range r.Resources {
			if res.ResourceType == kmsg.ConfigResourceTypeTopic {
				add("topic.update", "topic", res.ResourceName, res.ErrorCode, res.ErrorMessage)
			}
		}
	case *kmsg.IncrementalAlterConfigsResponse:
		if kreq.(*kmsg.IncrementalAlterConfigsRequest).ValidateOnly {
			return
		}
		for _, res := range r.Resources {
			if res.ResourceType == kmsg.ConfigResourceTypeTopic {
				add("topic.update", "topic", res.ResourceName, res.ErrorCode, res.ErrorMessage)
			}
		}
	case *kmsg.DeleteGroupsResponse:
		for _, g := range r.Groups {
			add("group.delete", "group", g.Group, g.ErrorCode, nil)
		}
	case *kmsg.OffsetDeleteResponse:
		group := kreq.(*kmsg.OffsetDeleteRequest).Group
		code := r.ErrorCode
		for _, t := range r.Topics {
			for _, p := range t.Partitions {
				if code == 0 {
					code = p.ErrorCode
				}
			}
		}
		add("group-offset.delete", "group", group, code, nil)
	case *kmsg.AlterClientQuotasResponse:
		if kreq.(*kmsg.AlterClientQuotasRequest).ValidateOnly {
			return
		}
		for _, e := range r.Entries {
			add("quota.update", "quota", alteredEntity(e.Entity), e.ErrorCode, e.ErrorMessage)
		}
	case *kmsg.DeleteRecordsResponse:
		for _, t := range r.Topics {
			code := int16(0)
			for _, p := range t.Partitions {
				if code == 0 {
					code = p.ErrorCode
				}
			}
			add("message.delete", "topic", t.Topic, code, nil)
		}
	default:
		return
	}
	for i := range changes {
		if changes[i].Kind == "topic" && changes[i].TopicID == "" {
			changes[i].TopicID = c.b.topicID(changes[i].Name)
		}
	}
	login := &KafkaLogin{Addr: c.ip}
	if s := c.sess.Load(); s != nil {
		login.Mechanism, login.User, login.Password = s.mechanism, s.user, s.password
	}
	for _, ch := range changes {
		ch.Login = login
		rec(c.ctx, ch)
	}
}

// kafkaChange reads a Kafka error code as the HTTP status Activity Tracker
// events carry.
func kafkaChange(action, kind, name string, code int16, msg *string) Change {
	ch := Change{Action: action, Kind: kind, Name: name, Status: http.StatusOK}
	if code == 0 {
		return ch
	}
	ke, ok := kerr.ErrorForCode(code).(*kerr.Error)
	if !ok {
		ke = kerr.UnknownServerError
	}
	ch.Reason = ke.Message
	if msg != nil && *msg != "" {
		ch.Reason += ": " + *msg
	}
	switch ke {
	case kerr.TopicAuthorizationFailed, kerr.GroupAuthorizationFailed, kerr.ClusterAuthorizationFailed:
		ch.Status = http.StatusForbidden
	case kerr.UnknownTopicOrPartition, kerr.UnknownTopicID, kerr.GroupIDNotFound:
		ch.Status = http.StatusNotFound
	case kerr.TopicAlreadyExists, kerr.NonEmptyGroup, kerr.GroupSubscribedToTopic:
		ch.Status = http.StatusConflict
	case kerr.InvalidPartitions, kerr.InvalidConfig, kerr.InvalidReplicationFactor, kerr.InvalidRequest,
		kerr.InvalidTopicException, kerr.PolicyViolation, kerr.OffsetOutOfRange, kerr.InvalidReplicaAssignment:
		ch.Status = http.StatusBadRequest
	default:
		ch.Status = http.StatusInternalServerError
	}
	return ch
}

// auditedAdmin records every change made through the admin REST API, and
// every refused attempt, once the call has been answered by next.
func (b *Broker) auditedAdmin(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if b.cfg.Audit == nil || (r.Method != http.MethodPost && r.Method != http.MethodPatch && r.Method != http.MethodDelete) {
			next.ServeHTTP(w, r)
			return
		}
		// A created topic's name, and whether an offset reset is more than
		// a preview, are in the body: read what the handler would (at most
		// 1 MiB) and hand it on.
		var asked struct {
			Name    string `json:"name"`
			Execute bool   `json:"execute"`
		}
		if r.Method != http.MethodDelete && r.Body != nil {
			body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
			if err == nil {
				json.Unmarshal(body, &asked)
			}
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), r.Body))
		}
		// A deleted topic's id must be read before it goes.
		before := ""
		if name, ok := strings.CutPrefix(r.URL.Path, "/admin/topics/"); ok && r.Method == http.MethodDelete {
			before = b.topicID(name)
		}
		aw := &auditWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(aw, r)
		var ch Change
		switch {
		case strings.HasPrefix(r.Pattern, "POST /admin/topics"):
			ch = Change{Action: "topic.create", Kind: "topic", Name: asked.Name}
		case strings.HasPrefix(r.Pattern, "PATCH /admin/consumergroups/"):
			if !asked.Execute && aw.status < 300 {
				return // a preview changes nothing
			}
			ch = Change{Action: "group.update", Kind: "group", Name: r.PathValue("group")}
		case strings.HasPrefix(r.Pattern, "PATCH /admin/topics/"):
			ch = Change{Action: "topic.update", Kind: "topic", Name: r.PathValue("name")}
		case strings.HasPrefix(r.Pattern, "DELETE /admin/topics/"):
			ch = Change{Action: "topic.delete", Kind: "topic", Name: r.PathValue("name")}
		case strings.HasPrefix(r.Pattern, "DELETE /admin/consumergroups/"):
			ch = Change{Action: "group.delete", Kind: "group", Name: r.PathValue("group")}
		default:
			return // no such path: nothing was attempted
		}
		ch.Status, ch.Reason, ch.Request = aw.status, aw.reason, r
		if ch.Kind == "topic" {
			ch.TopicID = cmp.Or(before, b.topicID(ch.Name))
		}
		b.cfg.Audit(r.Context(), ch)
	})
}

// auditWriter keeps the status and error message of an admin answer.
type auditWriter struct {
	http.ResponseWriter
	status int
	reason string
}

func (w *auditWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

// topicID is the id of the topic named name, or "" when there is none.
func (b *Broker) topicID(name string) string {
	if t := b.topics.byNameOrNil(name); t != nil {
		return t.id.String()
	}
	return ""
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *auditWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
