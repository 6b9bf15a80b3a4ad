package broker

import (
	"context"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleTxnOffsetCommit records offsets a transaction commits for a group
// added with AddOffsetsToTxn; they reach the group only on commit.
func (c *conn) handleTxnOffsetCommit(_ context.Context, r *kmsg.TxnOffsetCommitRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.TxnOffsetCommitResponse)
	codes := make([][]int16, len(r.Topics))
	for i, rt := range r.Topics {
		codes[i] = make([]int16, len(rt.Partitions))
	}
	all := func(kerrr *kerr.Error) {
		for i := range codes {
			for j := range codes[i] {
				if codes[i][j] == 0 {
					codes[i][j] = kerrr.Code
				}
			}
		}
	}
	if kerrr := c.txnOffsetCommit(r, codes); kerrr != nil {
		all(kerrr)
	}
	for i, rt := range r.Topics {
		st := kmsg.NewTxnOffsetCommitResponseTopic()
		st.Topic = rt.Topic
		for j, rp := range rt.Partitions {
			sp := kmsg.NewTxnOffsetCommitResponseTopicPartition()
			sp.Partition, sp.ErrorCode = rp.Partition, codes[i][j]
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp, nil
}

// txnOffsetCommit fills per-partition codes and returns the error of the
// whole request, if any.
func (c *conn) txnOffsetCommit(r *kmsg.TxnOffsetCommitRequest, codes [][]int16) *kerr.Error {
	if kerrr := c.txnAllowed(r.TransactionalID); kerrr != nil {
		return kerrr
	}
	if !c.may(GroupResource, r.Group, Reader) {
		return kerr.GroupAuthorizationFailed
	}
	if kerrr := c.b.notCoordinator(); kerrr != nil {
		c.txnOffsetTopicCodes(r, codes) // unauthorized and unknown partitions say so, as Kafka answers
		return kerrr
	}
	generation := int32(-1)
	if r.Version >= 3 {
		generation = r.Generation
	}
	if kerrr := c.b.groups.checkMember(r.Group, generation, r.MemberID); kerrr != nil {
		return kerrr
	}
	tc := c.b.txns
	t, kerrr := tc.lookup(r.TransactionalID, r.ProducerID, r.ProducerEpoch, r.Version >= 3)
	if kerrr != nil {
		return kerrr
	}
	defer t.mu.Unlock()
	if t.rec.State != txnOngoing || !slices.Contains(t.rec.Groups, r.Group) {
		return kerr.InvalidTxnState
	}
	c.txnOffsetTopicCodes(r, codes)
	for i, rt := range r.Topics {
		tp := c.b.topics.byNameOrNil(rt.Topic)
		for j, rp := range rt.Partitions {
			if codes[i][j] != 0 {
				continue
			}
			o := txnOffset{Group: r.Group, TopicID: tp.id, Partition: rp.Partition, committed: committed{Offset: rp.Offset, LeaderEpoch: rp.LeaderEpoch}}
			if rp.Metadata != nil {
				o.Metadata = *rp.Metadata
			}
			k := slices.IndexFunc(t.rec.Offsets, func(x txnOffset) bool {
				return x.Group == o.Group && x.TopicID == o.TopicID && x.Partition == o.Partition
			})
			if k >= 0 {
				t.rec.Offsets[k] = o
			} else {
				t.rec.Offsets = append(t.rec.Offsets, o)
			}
		}
	}
	if err := tc.save(t); err != nil {
		c.log.Error("storing a transaction failed", "err", err)
		return kerr.CoordinatorNotAvailable
	}
	return nil
}

// txnOffsetTopicCodes sets the codes of partitions whose topic the login
// may not read or that do not exist.
func (c *conn) txnOffsetTopicCodes(r *kmsg.TxnOffsetCommitRequest, codes [][]int16) {
	for i, rt := range r.Topics {
		tp := c.b.topics.byNameOrNil(rt.Topic)
		for j, rp := range rt.Partitions {
			if !c.mayTopic(tp, rt.Topic, Reader) {
				codes[i][j] = kerr.TopicAuthorizationFailed.Code
			} else if _, kerrr := c.b.topics.partition(tp, rp.Partition); kerrr != nil {
				codes[i][j] = kerrr.Code
			}
		}
	}
}
