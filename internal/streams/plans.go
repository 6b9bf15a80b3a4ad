package streams

import "github.com/keyline/keyline/internal/streams/broker"

// Event Streams plans, by resource_plan_id and by name.
const (
	PlanStandard   = "eventstreams-gen2-standard"
	PlanEnterprise = "eventstreams-gen2-enterprise"
)

// planLimits are each plan's limits, modelled on Event Streams': the
// Standard plan shares a cluster, so it caps partitions, message size and
// retention; Enterprise has a cluster of its own and larger limits.
//
// The byte rates are each user's default client quotas (the login's IAM
// ID; AlterClientQuotas overrides them), from the throughput Event Streams
// publishes per plan ("How Event Streams uses limits and quotas",
// cloud.ibm.com/docs/EventStreams?topic=EventStreams-kafka_quotas):
// Standard allows 1 MB/s per partition up to 20 MB/s per instance,
// measured separately for producers and consumers, so no one user may take
// more than 20 MB/s either way; Enterprise (gen 2) is 100 MB/s of
// throughput, 50 MB/s producing and 50 MB/s consuming.
var planLimits = map[string]broker.PlanLimits{
	PlanStandard: {MaxPartitions: 100, MaxMessageBytes: 1048588, MaxRetentionMs: 30 * 24 * 60 * 60 * 1000,
		ProducerByteRate: 20 << 20, ConsumerByteRate: 20 << 20},
	PlanEnterprise: {MaxPartitions: 3000, MaxMessageBytes: 10 << 20, ProducerByteRate: 50 << 20, ConsumerByteRate: 50 << 20},
}

// PlanLimits returns a plan's limits; plan is a resource_plan_id or a plan
// name. A plan Keyline does not know gets Standard's, the stricter.
func PlanLimits(plan string) broker.PlanLimits {
	switch plan {
	case "enterprise":
		plan = PlanEnterprise
	case "standard":
		plan = PlanStandard
	}
	if l, ok := planLimits[plan]; ok {
		return l
	}
	return planLimits[PlanStandard]
}
