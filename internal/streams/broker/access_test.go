package broker

import (
	"context"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// A probe sends one request and returns its (first) error code.
type probe func(ctx context.Context, cl kmsg.Requestor) (int16, error)

func initProducerIDProbe(txn *string) probe {
	return func(ctx context.Context, cl kmsg.Requestor) (int16, error) {
		req := kmsg.NewPtrInitProducerIDRequest()
		req.TransactionalID = txn
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.ErrorCode, nil
	}
}

func deleteTopicProbe(name string) probe {
	return func(ctx context.Context, cl kmsg.Requestor) (int16, error) {
		req := kmsg.NewPtrDeleteTopicsRequest()
		req.TopicNames = []string{name}
		req.Topics = []kmsg.DeleteTopicsRequestTopic{{Topic: &name}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.Topics[0].ErrorCode, nil
	}
}

func createPartitionsProbe(name string, count int32) probe {
	return func(ctx context.Context, cl kmsg.Requestor) (int16, error) {
		req := kmsg.NewPtrCreatePartitionsRequest()
		req.Topics = []kmsg.CreatePartitionsRequestTopic{{Topic: name, Count: count}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			return 0, err
		}
		return resp.Topics[0].ErrorCode, nil
	}
}

func TestAccessLevelsGateRequests(t *testing.T) {
	tb := startBroker(t, nil)
	tb.mustCreate(t, "guarded", 1)
	tests := []struct {
		name string
		key  string
		send probe
		want int16
	}{
		{"reader may not get a producer id", readerKey, initProducerIDProbe(nil), kerr.ClusterAuthorizationFailed.Code},
		{"writer gets a producer id", writerKey, initProducerIDProbe(nil), 0},
		{"reader may not use a transactional id", readerKey, initProducerIDProbe(kmsg.StringPtr("txn")), kerr.TransactionalIDAuthorizationFailed.Code},
		{"writer may not delete topics", writerKey, deleteTopicProbe("guarded"), kerr.TopicAuthorizationFailed.Code},
		{"writer may not add partitions", writerKey, createPartitionsProbe("guarded", 2), kerr.TopicAuthorizationFailed.Code},
		{"manager may not shrink partitions", managerKey, createPartitionsProbe("guarded", 1), kerr.InvalidPartitions.Code},
		{"manager adds partitions", managerKey, createPartitionsProbe("guarded", 3), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, err := tt.send(testCtx(t), tb.client(t, tt.key))
			if err != nil {
				t.Fatal(err)
			}
			if code != tt.want {
				t.Fatalf("got %v, want %v", kerr.ErrorForCode(code), kerr.ErrorForCode(tt.want))
			}
		})
	}
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no storage", Config{Addr: "127.0.0.1:0", Authenticate: testAuthenticate}},
		{"no authenticator", Config{Addr: "127.0.0.1:0", Storage: newMemStore()}},
		{"nowhere to listen", Config{Storage: newMemStore(), Authenticate: testAuthenticate}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if b, err := New(tt.cfg); err == nil {
				b.Close()
				t.Fatal("New accepted an incomplete config")
			}
		})
	}
}
