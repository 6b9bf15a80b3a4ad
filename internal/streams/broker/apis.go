package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"
)

const (
	produceKey          int16 = 0
	saslHandshakeKey    int16 = 17
	apiVersionsKey      int16 = 18
	saslAuthenticateKey int16 = 36
)

// versionRange is what ApiVersions advertises for a key. Minimums are low on
// purpose: librdkafka turns features on only if the range contains old
// versions (SaslHandshake 0, the group APIs 0, InitProducerId 0), even though
// it then sends newer ones.
type versionRange struct{ min, max int16 }

var apis = map[int16]versionRange{
	0:  {3, 13}, // Produce: magic 2 batches only
	1:  {4, 18}, // Fetch
	2:  {0, 10}, // ListOffsets
	3:  {0, 13}, // Metadata
	8:  {0, 10}, // OffsetCommit
	9:  {0, 10}, // OffsetFetch
	10: {0, 6},  // FindCoordinator
	11: {0, 9},  // JoinGroup
	12: {0, 4},  // Heartbeat
	13: {0, 5},  // LeaveGroup
	14: {0, 5},  // SyncGroup
	15: {0, 6},  // DescribeGroups
	16: {0, 5},  // ListGroups
	17: {0, 1},  // SaslHandshake
	18: {0, 5},  // ApiVersions
	19: {0, 7},  // CreateTopics
	20: {0, 6},  // DeleteTopics
	21: {0, 2},  // DeleteRecords
	22: {0, 5},  // InitProducerId
	23: {0, 4},  // OffsetForLeaderEpoch
	24: {0, 3},  // AddPartitionsToTxn (v4+ is broker to broker)
	25: {0, 3},  // AddOffsetsToTxn
	26: {0, 3},  // EndTxn
	27: {0, 1},  // WriteTxnMarkers: refused, brokers only
	28: {0, 3},  // TxnOffsetCommit
	32: {0, 4},  // DescribeConfigs
	33: {0, 2},  // AlterConfigs
	36: {0, 2},  // SaslAuthenticate
	37: {0, 3},  // CreatePartitions
	42: {0, 2},  // DeleteGroups
	44: {0, 1},  // IncrementalAlterConfigs
	47: {0, 0},  // OffsetDelete
	48: {0, 1},  // DescribeClientQuotas
	49: {0, 1},  // AlterClientQuotas
	60: {0, 1},  // DescribeCluster
}

// dispatch runs the handler for a decoded request. A nil response means none
// is sent (acks=0 produce).
func (c *conn) dispatch(ctx context.Context, req *request) (kmsg.Response, error) {
	if forwarded(req.kreq) && c.b.follows() {
		if resp := c.forward(ctx, req.kreq); resp != nil {
			return resp, nil
		}
		// Unreachable leader: the handler answers NOT_CONTROLLER.
	}
	switch r := req.kreq.(type) {
	case *kmsg.ProduceRequest:
		return c.handleProduce(ctx, r)
	case *kmsg.FetchRequest:
		return c.handleFetch(ctx, r)
	case *kmsg.ListOffsetsRequest:
		return c.handleListOffsets(ctx, r)
	case *kmsg.MetadataRequest:
		return c.handleMetadata(ctx, r)
	case *kmsg.OffsetCommitRequest:
		return c.handleOffsetCommit(ctx, r)
	case *kmsg.OffsetFetchRequest:
		return c.handleOffsetFetch(ctx, r)
	case *kmsg.FindCoordinatorRequest:
		return c.handleFindCoordinator(ctx, r)
	case *kmsg.JoinGroupRequest:
		return c.handleJoinGroup(ctx, r)
	case *kmsg.HeartbeatRequest:
		return c.handleHeartbeat(ctx, r)
	case *kmsg.LeaveGroupRequest:
		return c.handleLeaveGroup(ctx, r)
	case *kmsg.SyncGroupRequest:
		return c.handleSyncGroup(ctx, r)
	case *kmsg.DescribeGroupsRequest:
		return c.handleDescribeGroups(ctx, r)
	case *kmsg.DeleteGroupsRequest:
		return c.handleDeleteGroups(ctx, r)
	case *kmsg.OffsetDeleteRequest:
		return c.handleOffsetDelete(ctx, r)
	case *kmsg.OffsetForLeaderEpochRequest:
		return c.handleOffsetForLeaderEpoch(ctx, r)
	case *kmsg.DescribeClusterRequest:
		return c.handleDescribeCluster(ctx, r)
	case *kmsg.ListGroupsRequest:
		return c.handleListGroups(ctx, r)
	case *kmsg.SASLHandshakeRequest:
		return c.handleSASLHandshake(ctx, r)
	case *kmsg.ApiVersionsRequest:
		return c.handleApiVersions(ctx, r)
	case *kmsg.CreateTopicsRequest:
		return c.handleCreateTopics(ctx, r)
	case *kmsg.DeleteTopicsRequest:
		return c.handleDeleteTopics(ctx, r)
	case *kmsg.DeleteRecordsRequest:
		return c.handleDeleteRecords(ctx, r)
	case *kmsg.InitProducerIDRequest:
		return c.handleInitProducerID(ctx, r)
	case *kmsg.AddPartitionsToTxnRequest:
		return c.handleAddPartitionsToTxn(ctx, r)
	case *kmsg.AddOffsetsToTxnRequest:
		return c.handleAddOffsetsToTxn(ctx, r)
	case *kmsg.EndTxnRequest:
		return c.handleEndTxn(ctx, r)
	case *kmsg.WriteTxnMarkersRequest:
		return c.handleWriteTxnMarkers(ctx, r)
	case *kmsg.TxnOffsetCommitRequest:
		return c.handleTxnOffsetCommit(ctx, r)
	case *kmsg.DescribeConfigsRequest:
		return c.handleDescribeConfigs(ctx, r)
	case *kmsg.AlterConfigsRequest:
		return c.handleAlterConfigs(ctx, r)
	case *kmsg.IncrementalAlterConfigsRequest:
		return c.handleIncrementalAlterConfigs(ctx, r)
	case *kmsg.SASLAuthenticateRequest:
		return c.handleSASLAuthenticate(ctx, r)
	case *kmsg.CreatePartitionsRequest:
		return c.handleCreatePartitions(ctx, r)
	case *kmsg.DescribeClientQuotasRequest:
		return c.handleDescribeClientQuotas(ctx, r)
	case *kmsg.AlterClientQuotasRequest:
		return c.handleAlterClientQuotas(ctx, r)
	case nil:
		if req.key == apiVersionsKey { // a version above ours
			return c.unsupportedApiVersions(req.version), nil
		}
	}
	return nil, badFrame("request key %d has no handler", req.key)
}
