package broker

import (
	"cmp"
	"maps"
	"net/http"
	"slices"

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
// GET /admin/consumergroups/{group} and DELETE /admin/consumergroups/{group}.
func (b *Broker) registerAdminGroups(mux *http.ServeMux, auth AdminAuthenticator) {
	mux.HandleFunc("GET /admin/consumergroups", b.adminGuard(auth, Reader, b.adminListGroups))
	mux.HandleFunc("GET /admin/consumergroups/{group}", b.adminGuard(auth, Reader, b.adminGetGroup))
	mux.HandleFunc("DELETE /admin/consumergroups/{group}", b.adminGuard(auth, Manager, b.adminDeleteGroup))
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
