package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleAddPartitionsToTxn adds partitions to the producer's transaction
// (v0-v3: one transaction, sent by its producer) before it produces to them.
func (c *conn) handleAddPartitionsToTxn(_ context.Context, r *kmsg.AddPartitionsToTxnRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.AddPartitionsToTxnResponse)
	answer := func(code func(topic string, partition int32) int16) {
		for _, rt := range r.Topics {
			st := kmsg.NewAddPartitionsToTxnResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewAddPartitionsToTxnResponseTopicPartition()
				sp.Partition, sp.ErrorCode = p, code(rt.Topic, p)
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
	}
	all := func(kerrr *kerr.Error) { answer(func(string, int32) int16 { return kerrr.Code }) }
	if kerrr := c.txnAllowed(r.TransactionalID); kerrr != nil {
		all(kerrr)
		return resp, nil
	}
	// Every topic must be writable, or none is added (as Kafka answers).
	denied := false
	for _, rt := range r.Topics {
		denied = denied || !c.may(TopicResource, rt.Topic, Writer)
	}
	if denied {
		answer(func(topic string, _ int32) int16 {
			if !c.may(TopicResource, topic, Writer) {
				return kerr.TopicAuthorizationFailed.Code
			}
			return kerr.OperationNotAttempted.Code
		})
		return resp, nil
	}
	// Every partition must exist, or none is added (as Kafka answers).
	unknown := false
	for _, rt := range r.Topics {
		for _, p := range rt.Partitions {
			_, kerrr := c.b.topics.partition(c.b.topics.byNameOrNil(rt.Topic), p)
			unknown = unknown || kerrr != nil
		}
	}
	if unknown {
		answer(func(topic string, p int32) int16 {
			if _, kerrr := c.b.topics.partition(c.b.topics.byNameOrNil(topic), p); kerrr != nil {
				return kerrr.Code
			}
			return kerr.OperationNotAttempted.Code
		})
		return resp, nil
	}
	if kerrr := c.b.notCoordinator(); kerrr != nil {
		all(kerrr)
		return resp, nil
	}
	tc := c.b.txns
	t, kerrr := tc.lookup(r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Version >= 2)
	if kerrr != nil {
		all(kerrr)
		return resp, nil
	}
	defer t.mu.Unlock()
	for _, rt := range r.Topics {
		tp := c.b.topics.byNameOrNil(rt.Topic)
		for _, i := range rt.Partitions {
			p, _ := c.b.topics.partition(tp, i)
			tc.addPartition(t, tp.id, p)
		}
	}
	if err := tc.save(t); err != nil {
		c.log.Error("storing a transaction failed", "err", err)
		all(kerr.CoordinatorNotAvailable)
		return resp, nil
	}
	answer(func(string, int32) int16 { return 0 })
	return resp, nil
}
