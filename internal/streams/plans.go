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
var planLimits = map[string]broker.PlanLimits{
	PlanStandard:   {MaxPartitions: 100, MaxMessageBytes: 1048588, MaxRetentionMs: 30 * 24 * 60 * 60 * 1000},
	PlanEnterprise: {MaxPartitions: 3000, MaxMessageBytes: 10 << 20},
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
