package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/errs"
)

// handleAlterConfigs replaces topics' configs: those a resource does not
// name return to their defaults, as in Kafka. It needs the Manager role.
func (c *conn) handleAlterConfigs(_ context.Context, r *kmsg.AlterConfigsRequest) (kmsg.Response, error) {
	const op = "broker.AlterConfigs"
	resp := r.ResponseKind().(*kmsg.AlterConfigsResponse)
	for _, rr := range r.Resources {
		res := kmsg.NewAlterConfigsResponseResource()
		res.ResourceType, res.ResourceName = rr.ResourceType, rr.ResourceName
		res.ErrorCode, res.ErrorMessage = c.alterResource(rr.ResourceType, rr.ResourceName, func(t *topic) error {
			set := map[string]string{}
			for _, cfg := range rr.Configs {
				if _, dup := set[cfg.Name]; dup {
					return errs.Ef(op, errs.Invalid, kerr.InvalidRequest.Message, "config %s is given twice", cfg.Name)
				}
				if cfg.Value == nil {
					return errs.Ef(op, errs.Invalid, kerr.InvalidRequest.Message, "config %s needs a value", cfg.Name)
				}
				set[cfg.Name] = *cfg.Value
			}
			return c.b.topics.alter(op, t, replaceConfigs(set), r.ValidateOnly)
		})
		resp.Resources = append(resp.Resources, res)
	}
	return resp, nil
}

// alterResource runs alter on the topic an alter request's resource
// names, or says why its configs may not change: altering needs the
// Manager role, and the broker's own configs are fixed.
func (c *conn) alterResource(typ kmsg.ConfigResourceType, name string, alter func(*topic) error) (int16, *string) {
	switch typ {
	case kmsg.ConfigResourceTypeTopic:
		if !c.access().Allows(Manager) {
			return kerr.TopicAuthorizationFailed.Code, kmsg.StringPtr("changing topic configs needs the Manager role")
		}
		if ke := c.b.notController(); ke != nil {
			return ke.Code, nil
		}
		t := c.b.topics.byNameOrNil(name)
		if t == nil {
			return kerr.UnknownTopicOrPartition.Code, kmsg.StringPtr("the topic does not exist")
		}
		return kafkaError(alter(t))
	case kmsg.ConfigResourceTypeBroker:
		if !c.access().Allows(Manager) {
			return kerr.ClusterAuthorizationFailed.Code, nil
		}
		return kerr.PolicyViolation.Code, kmsg.StringPtr("the broker's configs are set by the deployment and cannot be changed; change topic configs instead")
	}
	return kerr.InvalidRequest.Code, kmsg.StringPtr("only topic configs can be changed")
}
