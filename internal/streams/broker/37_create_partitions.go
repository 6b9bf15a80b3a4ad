package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleCreatePartitions raises topics' partition counts.
func (c *conn) handleCreatePartitions(_ context.Context, r *kmsg.CreatePartitionsRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.CreatePartitionsResponse)
	for _, rt := range r.Topics {
		st := kmsg.NewCreatePartitionsResponseTopic()
		st.Topic = rt.Topic
		t := c.b.topics.byNameOrNil(rt.Topic)
		switch {
		case !c.mayTopic(t, rt.Topic, Manager):
			st.ErrorCode = kerr.TopicAuthorizationFailed.Code
		case c.b.notController() != nil:
			st.ErrorCode = c.b.notController().Code
		case t == nil:
			st.ErrorCode = kerr.UnknownTopicOrPartition.Code
		case len(rt.Assignment) > 0:
			st.ErrorCode = kerr.InvalidRequest.Code
			st.ErrorMessage = kmsg.StringPtr("manual replica assignment is not supported")
		default:
			st.ErrorCode, st.ErrorMessage = kafkaError(c.b.topics.grow(t, rt.Count, c.b.cfg.MaxPartitions, r.ValidateOnly))
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}
