package broker

import (
	"context"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleDeleteTopics deletes topics by name (v0-v5) or by name or id (v6+).
func (c *conn) handleDeleteTopics(_ context.Context, r *kmsg.DeleteTopicsRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.DeleteTopicsResponse)
	asked := r.Topics
	if r.Version < 6 {
		asked = nil
		for _, name := range r.TopicNames {
			asked = append(asked, kmsg.DeleteTopicsRequestTopic{Topic: &name})
		}
	}
	for _, rt := range asked {
		st := kmsg.NewDeleteTopicsResponseTopic()
		st.Topic, st.TopicID = rt.Topic, rt.TopicID
		var t *topic
		name := ""
		if rt.Topic != nil {
			name = *rt.Topic
			t = c.b.topics.byNameOrNil(name)
		} else {
			t = c.b.topics.byIDOrNil(uuid.UUID(rt.TopicID))
		}
		switch {
		case !c.mayTopic(t, name, Manager):
			st.ErrorCode = kerr.TopicAuthorizationFailed.Code
		case c.b.notController() != nil:
			st.ErrorCode = c.b.notController().Code
		case t == nil && rt.Topic == nil:
			st.ErrorCode = kerr.UnknownTopicID.Code
		case t == nil:
			st.ErrorCode = kerr.UnknownTopicOrPartition.Code
		default:
			st.Topic, st.TopicID = &t.name, t.id
			st.ErrorCode, st.ErrorMessage = kafkaError(c.b.topics.delete(t))
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
