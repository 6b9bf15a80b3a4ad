package broker

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/keyline/keyline/internal/errs"
)

// adminTopicUpdate is the Event Streams admin REST API's topic update:
// a new total partition count and config changes, each a new value or a
// reset to the default.
type adminTopicUpdate struct {
	NewTotalPartitionCount int32 `json:"new_total_partition_count"`
	Configs                []struct {
		Name           string  `json:"name"`
		Value          *string `json:"value"`
		ResetToDefault bool    `json:"reset_to_default"`
	} `json:"configs"`
}

// adminUpdateTopic is PATCH /admin/topics/{name}: it validates every
// change before making any, then changes the configs, then the partitions.
func (b *Broker) adminUpdateTopic(w http.ResponseWriter, r *http.Request) {
	const op = "broker.AdminUpdateTopic"
	var req adminTopicUpdate
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeAdminError(w, errs.E(op, errs.Invalid, "", "the request body is not a valid topic update: "+jsonProblem(err)))
		return
	}
	name := r.PathValue("name")
	t := b.topics.byNameOrNil(name)
	if t == nil {
		writeAdminError(w, errs.E(op, errs.NotExist, kerr.UnknownTopicOrPartition.Message, "the topic does not exist"))
		return
	}
	updates := make([]ConfigUpdate, 0, len(req.Configs))
	for _, c := range req.Configs {
		switch {
		case c.ResetToDefault && c.Value != nil:
			writeAdminError(w, errs.Ef(op, errs.Invalid, "", "config %s has both a value and reset_to_default", c.Name).On("field", "configs"))
			return
		case !c.ResetToDefault && c.Value == nil:
			writeAdminError(w, errs.Ef(op, errs.Invalid, "", "config %s needs a value or reset_to_default", c.Name).On("field", "configs"))
			return
		}
		updates = append(updates, ConfigUpdate{Name: c.Name, Value: c.Value})
	}
	grow := req.NewTotalPartitionCount != 0 && req.NewTotalPartitionCount != int32(len(b.topics.partitions(t)))
	if grow {
		if err := b.topics.grow(t, req.NewTotalPartitionCount, b.cfg.MaxPartitions, true); err != nil {
			writeAdminError(w, err)
			return
		}
	}
	if len(updates) > 0 {
		if _, err := b.AlterTopicConfigs(r.Context(), name, updates, false); err != nil {
			writeAdminError(w, err)
			return
		}
	}
	if grow {
		if err := b.topics.grow(t, req.NewTotalPartitionCount, b.cfg.MaxPartitions, false); err != nil {
			writeAdminError(w, err)
			return
		}
	}
	writeAdminJSON(w, http.StatusAccepted, b.toAdminTopic(b.topics.info(t)))
}
