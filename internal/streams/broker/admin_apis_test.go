package broker

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func TestDeleteGroupsAndOffsets(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "orders", 2)
	tb.mustCreate(t, "audit", 1)
	adm := tb.admin(t, managerKey)
	ctx := testCtx(t)
	commit := kadm.Offsets{}
	commit.AddOffset("orders", 0, 5, -1)
	commit.AddOffset("orders", 1, 7, -1)
	commit.AddOffset("audit", 0, 3, -1)
	if err := adm.CommitAllOffsets(ctx, "billing", commit); err != nil {
		t.Fatal(err)
	}

	// A Writer may not delete.
	if resp, err := tb.admin(t, writerKey).DeleteGroups(ctx, "billing"); err != nil || !errorIs(resp["billing"].Err, kerr.GroupAuthorizationFailed) {
		t.Fatalf("delete as writer: %v %v", resp, err)
	}

	del := kadm.TopicsSet{}
	del.Add("orders", 1)
	resp, err := adm.DeleteOffsets(ctx, "billing", del)
	if err != nil || resp.Error() != nil {
		t.Fatalf("delete offsets: %v %v", resp, err)
	}
	got, err := adm.FetchOffsets(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Lookup("orders", 1); ok {
		t.Fatal("orders/1's offset survived OffsetDelete")
	}
	if o, ok := got.Lookup("orders", 0); !ok || o.At != 5 {
		t.Fatalf("orders/0's offset = %+v, want 5 kept", o)
	}

	// A group with a member subscribed to a topic keeps that topic's
	// offsets, and cannot be deleted.
	cl := tb.client(t, readerKey, kgo.ConsumerGroup("live"), kgo.ConsumeTopics("orders"))
	waitFor(t, "the consumer to join", func() bool {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		cl.PollFetches(pctx) // joins
		cancel()
		d, err := adm.DescribeGroups(ctx, "live")
		return err == nil && len(d["live"].Members) == 1
	})
	if resp, err := adm.DeleteGroups(ctx, "live"); err != nil || !errorIs(resp["live"].Err, kerr.NonEmptyGroup) {
		t.Fatalf("delete a group with a member: %v %v", resp, err)
	}
	live := kadm.Offsets{}
	live.AddOffset("orders", 0, 1, -1)
	live.AddOffset("audit", 0, 1, -1)
	adm.CommitAllOffsets(ctx, "live", live) // may be refused outside the generation
	both := kadm.TopicsSet{}
	both.Add("orders", 0)
	both.Add("audit", 0)
	if resp, err := adm.DeleteOffsets(ctx, "live", both); err == nil {
		if e := resp["orders"][0]; !errorIs(e, kerr.GroupSubscribedToTopic) {
			t.Fatalf("offsets of a subscribed topic: %v", e)
		}
	} else {
		t.Fatal(err)
	}
	cl.Close()

	if resp, err := adm.DeleteGroups(ctx, "billing"); err != nil || resp["billing"].Err != nil {
		t.Fatalf("delete: %v %v", resp, err)
	}
	if resp, err := adm.DeleteGroups(ctx, "billing"); err != nil || !errorIs(resp["billing"].Err, kerr.GroupIDNotFound) {
		t.Fatalf("delete again: %v %v", resp, err)
	}
	if got, err := adm.FetchOffsets(ctx, "billing"); err != nil || len(got) != 0 {
		t.Fatalf("offsets of a deleted group: %v %v", got, err)
	}
}

func errorIs(err error, want *kerr.Error) bool { return err == want }

func TestDescribeClusterAndOffsetForLeaderEpoch(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "orders", 1)
	cl := tb.client(t, writerKey, kgo.DefaultProduceTopic("orders"))
	ctx := testCtx(t)
	for range 3 {
		if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	dc := kmsg.NewPtrDescribeClusterRequest()
	dr, err := dc.RequestWith(ctx, cl)
	if err != nil || dr.ErrorCode != 0 || len(dr.Brokers) != 1 || dr.ControllerID != 1 || dr.ClusterID == "" ||
		dr.Brokers[0].Port != tb.cfg.AdvertisedPort {
		t.Fatalf("DescribeCluster: %+v %v", dr, err)
	}
	oe := kmsg.NewPtrOffsetForLeaderEpochRequest()
	oe.ReplicaID = -1
	rt := kmsg.NewOffsetForLeaderEpochRequestTopic()
	rt.Topic = "orders"
	for epoch, current := range map[int32]int32{0: 0, 1: 0, 2: 3} {
		rp := kmsg.NewOffsetForLeaderEpochRequestTopicPartition()
		rp.LeaderEpoch, rp.CurrentLeaderEpoch = epoch, current
		rt.Partitions = []kmsg.OffsetForLeaderEpochRequestTopicPartition{rp}
		oe.Topics = []kmsg.OffsetForLeaderEpochRequestTopic{rt}
		or, err := oe.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		p := or.Topics[0].Partitions[0]
		switch epoch {
		case 0:
			if p.ErrorCode != 0 || p.LeaderEpoch != 0 || p.EndOffset != 3 {
				t.Fatalf("epoch 0: %+v", p)
			}
		case 1:
			if p.ErrorCode != 0 || p.LeaderEpoch != -1 || p.EndOffset != -1 {
				t.Fatalf("an epoch that never was: %+v", p)
			}
		case 2:
			if p.ErrorCode != kerr.UnknownLeaderEpoch.Code {
				t.Fatalf("a current epoch ahead of the broker's: %+v", p)
			}
		}
	}
}
