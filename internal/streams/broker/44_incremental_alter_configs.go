package broker

import (
	"context"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// handleIncrementalAlterConfigs changes topics' configs one by one: SET,
// DELETE (back to the default), APPEND and SUBTRACT (list configs, i.e.
// cleanup.policy). It needs the Manager role.
func (c *conn) handleIncrementalAlterConfigs(_ context.Context, r *kmsg.IncrementalAlterConfigsRequest) (kmsg.Response, error) {
	const op = "broker.IncrementalAlterConfigs"
	resp := r.ResponseKind().(*kmsg.IncrementalAlterConfigsResponse)
	for _, rr := range r.Resources {
		res := kmsg.NewIncrementalAlterConfigsResponseResource()
		res.ResourceType, res.ResourceName = rr.ResourceType, rr.ResourceName
		ops := make([]configOp, len(rr.Configs))
		for i, cfg := range rr.Configs {
			ops[i] = configOp{name: cfg.Name, op: cfg.Op, value: cfg.Value}
		}
		res.ErrorCode, res.ErrorMessage = c.alterResource(rr.ResourceType, rr.ResourceName, func(t *topic) error {
			return c.b.topics.alter(op, t, applying(op, ops), r.ValidateOnly)
		})
		resp.Resources = append(resp.Resources, res)
	}
	return resp, nil
}
