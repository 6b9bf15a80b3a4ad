package broker

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/errs"
)

// adminGroup is a consumer group in the Event Streams admin REST API's
// shape: its state, its members with their assigned partitions, and per
// partition the committed offset, the log end and the lag between them.
type adminGroup struct {
	GroupID string              `json:"groupId"`
	State   string              `json:"state"`
	Members []adminGroupMember  `json:"members"`
	Offsets []adminGroupOffsets `json:"offsets"`
}

type adminGroupMember struct {
	ConsumerID string                `json:"consumerId"`
	ClientID   string                `json:"clientId"`
	Host       string                `json:"host"`
	Partitions []adminTopicPartition `json:"partitions"`
}

type adminTopicPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
}

type adminGroupOffsets struct {
	Topic         string `json:"topic"`
	Partition     int32  `json:"partition"`
	CurrentOffset int64  `json:"currentOffset"`
	EndOffset     int64  `json:"endOffset"`
	Lag           int64  `json:"lag"`
}

type adminGroupSummary struct {
	GroupID string `json:"groupId"`
	State   string `json:"state"`
	Members int    `json:"members"`
}

// registerAdminGroups adds GET /admin/consumergroups,
// GET, DELETE and PATCH (offset reset) /admin/consumergroups/{group}. The
// groups live on the leader: a follower, which holds none, refuses.
func (b *Broker) registerAdminGroups(mux *http.ServeMux, auth AdminAuthenticator) {
	const op = "broker.AdminGroups"
	mux.HandleFunc("GET /admin/consumergroups", b.adminGuard(auth, Reader, b.leaderOnlyAdmin(op, b.adminListGroups)))
	mux.HandleFunc("GET /admin/consumergroups/{group}", b.adminGuard(auth, Reader, b.leaderOnlyAdmin(op, b.adminGetGroup)))
	mux.HandleFunc("DELETE /admin/consumergroups/{group}", b.adminGuard(auth, Manager, b.adminDeleteGroup))
	mux.HandleFunc("PATCH /admin/consumergroups/{group}", b.adminGuard(auth, Manager, b.adminResetGroup))
}

func (b *Broker) adminListGroups(w http.ResponseWriter, r *http.Request) {
	out := []adminGroupSummary{}
	for _, v := range b.groups.list() {
		out = append(out, adminGroupSummary{GroupID: v.name, State: string(v.state), Members: len(v.members)})
	}
	writeAdminJSON(w, http.StatusOK, out)
}

func (b *Broker) adminGetGroup(w http.ResponseWriter, r *http.Request) {
	const op = "broker.AdminGetGroup"
	name := r.PathValue("group")
	v := b.groups.describe(name)
	offsets := b.groups.committedOffsets(name)
	if v.state == groupDead && offsets == nil {
		writeAdminError(w, errs.Ef(op, errs.NotExist, kerr.GroupIDNotFound.Message, "consumer group %q does not exist", name))
		return
	}
	out := adminGroup{GroupID: name, State: string(v.state), Members: []adminGroupMember{}, Offsets: []adminGroupOffsets{}}
	for _, m := range v.members {
		am := adminGroupMember{ConsumerID: m.MemberID, ClientID: m.ClientID, Host: m.ClientHost, Partitions: []adminTopicPartition{}}
		var assigned kmsg.ConsumerMemberAssignment
		if v.protoType == "consumer" && assigned.ReadFrom(m.MemberAssignment) == nil {
			for _, t := range assigned.Topics {
				for _, p := range t.Partitions {
					am.Partitions = append(am.Partitions, adminTopicPartition{Topic: t.Topic, Partition: p})
				}
			}
		}
		out.Members = append(out.Members, am)
	}
	for _, k := range slices.Collect(maps.Keys(offsets)) {
		t := b.topics.byIDOrNil(k.topic)
		if t == nil {
			continue // the topic was deleted; its offsets go with it
		}
		o := adminGroupOffsets{Topic: t.name, Partition: k.partition, CurrentOffset: offsets[k].Offset}
		if p, ke := b.topics.partition(t, k.partition); ke == nil {
			o.EndOffset = p.log.EndOffset()
			o.Lag = max(o.EndOffset-o.CurrentOffset, 0)
		}
		out.Offsets = append(out.Offsets, o)
	}
	slices.SortFunc(out.Offsets, func(a, b adminGroupOffsets) int {
		return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	writeAdminJSON(w, http.StatusOK, out)
}

// adminDeleteGroup deletes a group with no members and its offsets; a group
// with members is refused as Kafka refuses it (NON_EMPTY_GROUP).
func (b *Broker) adminDeleteGroup(w http.ResponseWriter, r *http.Request) {
	const op = "broker.AdminDeleteGroup"
	name := r.PathValue("group")
	switch ke := b.groups.deleteGroup(name); ke {
	case nil:
		w.WriteHeader(http.StatusAccepted)
	case kerr.GroupIDNotFound:
		writeAdminError(w, errs.Ef(op, errs.NotExist, ke.Message, "consumer group %q does not exist", name))
	case kerr.NonEmptyGroup:
		writeAdminError(w, errs.Ef(op, errs.Conflict, ke.Message, "consumer group %q has active members: stop its consumers first (NON_EMPTY_GROUP)", name))
	default:
		writeAdminError(w, errs.E(op, errs.Unavailable, ke.Message, "the group cannot be deleted now; try again"))
	}
}

// adminGroupReset is the admin REST API's offset reset of a group on one
// topic: to the earliest or latest offset, to the first record at or after
// a time (datetime: RFC 3339 or milliseconds since the epoch), or to an
// offset. Without execute it only says what it would do.
type adminGroupReset struct {
	Topic   string `json:"topic"`
	Mode    string `json:"mode"`
	Value   string `json:"value"`
	Execute bool   `json:"execute"`
}

type adminGroupResetResult struct {
	Topic         string `json:"topic"`
	Partition     int32  `json:"partition"`
	CurrentOffset int64  `json:"current_offset"`
	NewOffset     int64  `json:"new_offset"`
}

// adminResetGroup is PATCH /admin/consumergroups/{group}. A group with
// members is refused: they would commit over the new offsets.
func (b *Broker) adminResetGroup(w http.ResponseWriter, r *http.Request) {
	const op = "broker.AdminResetGroup"
	var req adminGroupReset
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeAdminError(w, errs.E(op, errs.Invalid, "", "the request body is not a valid offset reset: "+jsonProblem(err)))
		return
	}
	name := r.PathValue("group")
	t := b.topics.byNameOrNil(req.Topic)
	if t == nil {
		writeAdminError(w, errs.Ef(op, errs.NotExist, kerr.UnknownTopicOrPartition.Message, "topic %q does not exist", req.Topic).On("field", "topic"))
		return
	}
	target, err := resetTarget(req.Mode, req.Value)
	if err != nil {
		writeAdminError(w, errs.E(op, errs.Invalid, "", err.Error()).On("field", "mode"))
		return
	}
	current := b.groups.committedOffsets(name)
	offsets := map[offsetKey]committed{}
	out := []adminGroupResetResult{}
	for _, p := range b.topics.partitions(t) {
		k := offsetKey{t.id, p.index}
		res := adminGroupResetResult{Topic: t.name, Partition: p.index, CurrentOffset: -1}
		if c, ok := current[k]; ok {
			res.CurrentOffset = c.Offset
		}
		res.NewOffset = target(r.Context(), b, p)
		offsets[k] = committed{Offset: res.NewOffset, LeaderEpoch: -1}
		out = append(out, res)
	}
	if req.Execute {
		// A commit from outside the group is refused while it has members.
		switch ke := b.groups.commit(name, -1, "", offsets); ke {
		case nil:
		case kerr.UnknownMemberID:
			writeAdminError(w, errs.Ef(op, errs.Conflict, kerr.NonEmptyGroup.Message, "consumer group %q has active members: stop its consumers before resetting its offsets (NON_EMPTY_GROUP)", name))
			return
		default:
			writeAdminError(w, errs.E(op, errs.Unavailable, ke.Message, "the offsets cannot be reset now; try again"))
			return
		}
	}
	writeAdminJSON(w, http.StatusOK, out)
}

// resetTarget reads a reset's mode and value as the offset it picks in a
// partition, clamped to the partition's log.
func resetTarget(mode, value string) (func(context.Context, *Broker, *partition) int64, error) {
	switch mode {
	case "earliest":
		return func(_ context.Context, _ *Broker, p *partition) int64 { return p.log.StartOffset() }, nil
	case "latest":
		return func(_ context.Context, _ *Broker, p *partition) int64 { return p.log.EndOffset() }, nil
	case "offset":
		n, err := strconv.ParseInt(value, 10, 64)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("mode offset needs a value that is an offset (a whole number, 0 or more), not %q", value)
		}
		return func(_ context.Context, _ *Broker, p *partition) int64 {
			return min(max(n, p.log.StartOffset()), p.log.EndOffset())
		}, nil
	case "datetime":
		ms, err := strconv.ParseInt(value, 10, 64)
		if err != nil {
			at, terr := time.Parse(time.RFC3339Nano, value)
			if terr != nil {
				return nil, fmt.Errorf("mode datetime needs a value that is an RFC 3339 time (2026-12-01T10:00:00Z) or milliseconds since the epoch, not %q", value)
			}
			ms = at.UnixMilli()
		}
		return func(ctx context.Context, b *Broker, p *partition) int64 {
			// The first record at or after the time, as ListOffsets finds
			// it; the end of the log when none is that late.
			sp := kmsg.NewListOffsetsResponseTopicPartition()
			sp.Offset = -1
			(&conn{b: b}).offsetAtTime(ctx, p, ms, &sp)
			if sp.Offset < 0 {
				return p.log.EndOffset()
			}
			return sp.Offset
		}, nil
	}
	return nil, fmt.Errorf("mode must be earliest, latest, datetime or offset, not %q", mode)
}
