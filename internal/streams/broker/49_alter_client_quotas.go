package broker

import (
	"context"
	"fmt"
	"math"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleAlterClientQuotas sets or removes producer_byte_rate and
// consumer_byte_rate for users and client ids (KIP-546), with Kafka's
// validation and error codes. It takes the Manager role on the cluster, as
// Kafka takes AlterConfigs on it. Each entry stands alone: the valid ones
// are applied (and persisted) together, the others answered with why.
func (c *conn) handleAlterClientQuotas(_ context.Context, r *kmsg.AlterClientQuotasRequest) (kmsg.Response, error) {
	resp := r.ResponseKind().(*kmsg.AlterClientQuotasResponse)
	allowed := c.may(ClusterResource, "", Manager)
	var changes []quotaChange
	var applied []int
	for _, e := range r.Entries {
		re := kmsg.NewAlterClientQuotasResponseEntry()
		for _, ec := range e.Entity {
			re.Entity = append(re.Entity, kmsg.AlterClientQuotasResponseEntryEntity{Type: ec.Type, Name: ec.Name})
		}
		ch, code, msg := parseQuotaAlteration(e)
		if !allowed {
			code, msg = kerr.ClusterAuthorizationFailed, "altering client quotas needs the Manager role on the cluster"
		} else if ke := c.b.notController(); ke != nil && code == nil {
			code, msg = ke, "client quotas are changed by the deployment's leader"
		}
		if code != nil {
			re.ErrorCode, re.ErrorMessage = code.Code, kmsg.StringPtr(msg)
		} else {
			changes = append(changes, ch)
			applied = append(applied, len(resp.Entries))
		}
		resp.Entries = append(resp.Entries, re)
	}
	if len(changes) > 0 && !r.ValidateOnly {
		if err := c.b.quotas.alter(changes); err != nil {
			c.log.Error("storing client quotas failed", "err", err)
			for _, i := range applied {
				resp.Entries[i].ErrorCode, resp.Entries[i].ErrorMessage = kerr.UnknownServerError.Code, kmsg.StringPtr("the quotas could not be stored")
			}
		}
	}
	return resp, nil
}

// quotaChange is one entity's valid alteration: values to set, keys to
// remove.
type quotaChange struct {
	entity quotaEntity
	set    map[string]float64
	remove []string
}

// parseQuotaAlteration checks an entry as Kafka does (ClientQuotaControlManager):
// the entity, then each op's key and value.
func parseQuotaAlteration(e kmsg.AlterClientQuotasRequestEntry) (quotaChange, *kerr.Error, string) {
	comps := make([]quotaComponent, len(e.Entity))
	for i, ec := range e.Entity {
		comps[i] = quotaComponent{typ: ec.Type, name: ec.Name}
	}
	entity, msg := parseQuotaEntity(comps)
	if msg != "" {
		return quotaChange{}, kerr.InvalidRequest, msg
	}
	ch := quotaChange{entity: entity, set: map[string]float64{}}
	seen := map[string]bool{}
	for _, op := range e.Ops {
		if seen[op.Key] {
			return quotaChange{}, kerr.InvalidRequest, fmt.Sprintf("Duplicate quota key %s", op.Key)
		}
		seen[op.Key] = true
		if msg := checkQuotaKey(op.Key); msg != "" {
			return quotaChange{}, kerr.InvalidRequest, msg
		}
		if op.Remove {
			ch.remove = append(ch.remove, op.Key)
			continue
		}
		switch {
		case math.IsNaN(op.Value) || op.Value <= 0:
			return quotaChange{}, kerr.InvalidRequest, fmt.Sprintf("Quota %s must be greater than 0", op.Key)
		case op.Value > math.MaxInt64:
			return quotaChange{}, kerr.InvalidRequest, fmt.Sprintf("Proposed value for %s is too large for a LONG.", op.Key)
		case math.Abs(op.Value-math.Round(op.Value)) > 1e-6:
			return quotaChange{}, kerr.InvalidRequest, fmt.Sprintf("Proposed value for %s is not an integral value.", op.Key)
		}
		ch.set[op.Key] = math.Round(op.Value)
	}
	return ch, nil, ""
}

// checkQuotaKey refuses what is not a byte rate: Kafka's other quotas
// (request_percentage, controller_mutation_rate, connection_creation_rate)
// are refused by name rather than stored and not enforced.
func checkQuotaKey(key string) string {
	switch key {
	case producerByteRate, consumerByteRate:
		return ""
	case "request_percentage", "controller_mutation_rate", "connection_creation_rate":
		return fmt.Sprintf("quota %s is not supported by this broker; producer_byte_rate and consumer_byte_rate are", key)
	}
	return fmt.Sprintf("Invalid configuration key %s", key)
}

// quotaComponent is one (type, name) of an entity on the wire; a nil name
// is the type's default.
type quotaComponent struct {
	typ  string
	name *string
}

// parseQuotaEntity reads an entity as Kafka validates one: user and
// client-id at most once each, no empty names, ip alone (and refused here,
// the broker capping connections per address itself).
func parseQuotaEntity(comps []quotaComponent) (quotaEntity, string) {
	var e quotaEntity
	if len(comps) == 0 {
		return e, "Invalid empty client quota entity"
	}
	for _, c := range comps {
		if c.name != nil && *c.name == "" {
			return e, fmt.Sprintf("Empty %s not supported", c.typ)
		}
		switch c.typ {
		case quotaUser:
			if e.HasUser {
				return e, "Duplicate user in client quota entity"
			}
			e.HasUser = true
			if c.name != nil {
				e.User = *c.name
			}
		case quotaClientID:
			if e.HasClient {
				return e, "Duplicate client-id in client quota entity"
			}
			e.HasClient = true
			if c.name != nil {
				e.Client = *c.name
			}
		case quotaIP:
			return e, "ip quotas (connection_creation_rate) are not supported by this broker, which caps connections per source address itself"
		default:
			return e, fmt.Sprintf("Unhandled client quota entity type: %s", c.typ)
		}
	}
	return e, ""
}

// alteredEntity names an entity for the audit trail.
func alteredEntity(es []kmsg.AlterClientQuotasResponseEntryEntity) string {
	return entityString(es, func(e kmsg.AlterClientQuotasResponseEntryEntity) (string, *string) { return e.Type, e.Name })
}

// entityString names an entity as kafka-configs does:
// "user=<name>,client-id=<default>".
func entityString[T any](es []T, part func(T) (string, *string)) string {
	s := ""
	for i, e := range es {
		typ, name := part(e)
		n := "<default>"
		if name != nil {
			n = *name
		}
		if i > 0 {
			s += ","
		}
		s += typ + "=" + n
	}
	return s
}
