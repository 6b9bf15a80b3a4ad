package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Classic consumer group states, named as DescribeGroups reports them.
type groupState string

const (
	groupEmpty               groupState = "Empty"
	groupPreparingRebalance  groupState = "PreparingRebalance"
	groupCompletingRebalance groupState = "CompletingRebalance"
	groupStable              groupState = "Stable"
	groupDead                groupState = "Dead"
)

const (
	minSessionTimeout = 6 * time.Second // Kafka's group.min.session.timeout.ms
	maxSessionTimeout = 30 * time.Minute
	groupMetaPrefix   = "group/"
	groupTick         = 200 * time.Millisecond
)

// coordinator runs the classic consumer group protocol for every group of
// the deployment: members join, the leader's assignment is handed out on
// sync, heartbeats keep members alive, and committed offsets are stored.
type coordinator struct {
	st    Storage
	clock Clock
	log   *slog.Logger

	mu     sync.Mutex
	groups map[string]*group
}

type group struct {
	name       string
	storageID  string // names the group's record in storage; never the group name
	state      groupState
	generation int32
	protoType  string
	protocol   string
	leader     string
	members    map[string]*member
	pending    map[string]time.Time // ids handed out with MEMBER_ID_REQUIRED: expiry
	deadline   time.Time            // end of the current join phase
	offsets    map[offsetKey]committed
}

type offsetKey struct {
	topic     uuid.UUID
	partition int32
}

type committed struct {
	Offset      int64  `json:"offset"`
	LeaderEpoch int32  `json:"leader_epoch"`
	Metadata    string `json:"metadata,omitempty"`
}

type member struct {
	id, clientID, clientHost string
	instanceID               *string
	protocols                []kmsg.JoinGroupRequestProtocol
	session, rebalance       time.Duration
	lastSeen                 time.Time
	assignment               []byte
	joining                  chan joinResult // set while the member waits in JoinGroup
	syncing                  chan syncResult // set while the member waits in SyncGroup
}

type joinResult struct {
	err        *kerr.Error
	generation int32
	protoType  string
	protocol   string
	leader     string
	memberID   string
	members    []kmsg.JoinGroupResponseMember // only for the leader
}

type syncResult struct {
	err        *kerr.Error
	assignment []byte
}

// groupRecord is a group's durable form: its name, committed offsets and
// the last generation it reached with its protocol type, saved whenever a
// generation starts, so that a coordinator opened later over the same
// storage (a new leader) starts past it: a member of an old generation
// cannot commit into a new one that happens to have its number.
type groupRecord struct {
	Name         string         `json:"name"`
	Offsets      []offsetRecord `json:"offsets"`
	Generation   int32          `json:"generation,omitempty"`
	ProtocolType string         `json:"protocol_type,omitempty"`
}

type offsetRecord struct {
	TopicID   string `json:"topic_id"`
	Partition int32  `json:"partition"`
	committed
}

func newCoordinator(st Storage, clock Clock, log *slog.Logger) *coordinator {
	return &coordinator{st: st, clock: clock, log: log, groups: map[string]*group{}}
}

// load reads the groups' committed offsets from storage.
func (co *coordinator) load() error {
	for key, val := range co.st.ListMeta(groupMetaPrefix) {
		var rec groupRecord
		if err := json.Unmarshal(val, &rec); err != nil {
			return fmt.Errorf("group record %s: %w", key, err)
		}
		g := newGroup(rec.Name)
		g.storageID = strings.TrimPrefix(key, groupMetaPrefix)
		// The members of the generation the record names are gone with
		// the coordinator that had them: theirs is over.
		g.generation, g.protoType = rec.Generation+1, rec.ProtocolType
		for _, o := range rec.Offsets {
			id, err := uuid.Parse(o.TopicID)
			if err != nil {
				return fmt.Errorf("group record %s: %w", key, err)
			}
			g.offsets[offsetKey{id, o.Partition}] = o.committed
		}
		co.groups[rec.Name] = g
	}
	return nil
}

func newGroup(name string) *group {
	return &group{name: name, state: groupEmpty, members: map[string]*member{}, pending: map[string]time.Time{}, offsets: map[offsetKey]committed{}}
}

// save writes the group's offsets; called with co.mu held.
func (co *coordinator) save(g *group) error {
	if g.storageID == "" {
		g.storageID = uuid.NewString()
	}
	rec := groupRecord{Name: g.name, Generation: g.generation, ProtocolType: g.protoType}
	for k, v := range g.offsets {
		rec.Offsets = append(rec.Offsets, offsetRecord{TopicID: k.topic.String(), Partition: k.partition, committed: v})
	}
	buf, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	return co.st.PutMeta(groupMetaPrefix+g.storageID, buf)
}

// saveGeneration saves the group's new generation; called with co.mu
// held. A failure is logged, not answered: the generation holds in memory,
// and the members of the old one are not members of the new one anyway.
func (co *coordinator) saveGeneration(g *group) {
	if err := co.save(g); err != nil {
		co.log.Warn("storing a group's generation failed", "err", err)
	}
}

// run expires members and join phases until done closes.
func (co *coordinator) run(done <-chan struct{}) { every(done, groupTick, co.expire) }

func (co *coordinator) expire() {
	co.mu.Lock()
	defer co.mu.Unlock()
	now := co.clock.Now()
	for _, g := range co.groups {
		for id, until := range g.pending {
			if now.After(until) {
				delete(g.pending, id)
			}
		}
		for id, m := range g.members {
			if m.joining == nil && m.syncing == nil && now.Sub(m.lastSeen) > m.session {
				co.log.Debug("group member timed out", "member", id)
				co.removeMember(g, id)
			}
		}
		if g.state == groupPreparingRebalance {
			if now.After(g.deadline) {
				co.completeJoin(g)
			} else {
				co.maybeCompleteJoin(g)
			}
		}
	}
}

// join adds or refreshes a member and waits for the join phase to end.
func (co *coordinator) join(ctx context.Context, r *kmsg.JoinGroupRequest, clientID, host string) joinResult {
	co.mu.Lock()
	res, wait := co.joinLocked(r, clientID, host)
	co.mu.Unlock()
	if wait == nil {
		return res
	}
	select {
	case res := <-wait:
		return res
	case <-ctx.Done():
		return joinResult{err: kerr.RebalanceInProgress}
	}
}

func (co *coordinator) joinLocked(r *kmsg.JoinGroupRequest, clientID, host string) (joinResult, chan joinResult) {
	session := time.Duration(r.SessionTimeoutMillis) * time.Millisecond
	rebalance := session
	if r.Version >= 1 {
		rebalance = time.Duration(r.RebalanceTimeoutMillis) * time.Millisecond
	}
	switch {
	case r.Group == "":
		return joinResult{err: kerr.InvalidGroupID}, nil
	case session < minSessionTimeout || session > maxSessionTimeout:
		return joinResult{err: kerr.InvalidSessionTimeout}, nil
	case r.ProtocolType == "" || len(r.Protocols) == 0:
		return joinResult{err: kerr.InconsistentGroupProtocol}, nil
	}
	g := co.groups[r.Group]
	if g == nil {
		g = newGroup(r.Group)
		co.groups[r.Group] = g
	}
	if len(g.members) > 0 && (g.protoType != r.ProtocolType || !g.supportsAny(r.Protocols, r.MemberID)) {
		return joinResult{err: kerr.InconsistentGroupProtocol}, nil
	}
	now := co.clock.Now()
	id := r.MemberID
	m := g.members[id]
	switch {
	case id == "":
		id = memberID(clientID)
		if r.Version >= 4 {
			g.pending[id] = now.Add(session)
			return joinResult{err: kerr.MemberIDRequired, memberID: id, generation: -1}, nil
		}
	case m == nil:
		if _, ok := g.pending[id]; !ok {
			return joinResult{err: kerr.UnknownMemberID, memberID: id, generation: -1}, nil
		}
	}
	delete(g.pending, id)
	if m == nil {
		m = &member{id: id}
		g.members[id] = m
	}
	m.clientID, m.clientHost, m.instanceID = clientID, host, r.InstanceID
	m.protocols = slices.Clone(r.Protocols)
	m.session, m.rebalance, m.lastSeen = session, rebalance, now
	if m.joining == nil {
		m.joining = make(chan joinResult, 1)
	}
	wait := m.joining
	g.protoType = r.ProtocolType
	if g.state != groupPreparingRebalance {
		co.prepareRebalance(g)
	}
	co.maybeCompleteJoin(g)
	return joinResult{}, wait
}

func memberID(clientID string) string {
	if clientID == "" {
		clientID = "member"
	}
	return clientID + "-" + uuid.NewString()
}

// supportsAny reports whether the joining member shares a protocol with
// every other member.
func (g *group) supportsAny(protocols []kmsg.JoinGroupRequestProtocol, self string) bool {
	for _, p := range protocols {
		if g.allSupport(p.Name, self) {
			return true
		}
	}
	return false
}

func (g *group) allSupport(name, except string) bool {
	for id, m := range g.members {
		if id == except {
			continue
		}
		if !slices.ContainsFunc(m.protocols, func(p kmsg.JoinGroupRequestProtocol) bool { return p.Name == name }) {
			return false
		}
	}
	return true
}

// prepareRebalance starts a join phase: every member must rejoin before the
// longest rebalance timeout ends. Members waiting in sync learn of it.
func (co *coordinator) prepareRebalance(g *group) {
	g.state = groupPreparingRebalance
	longest := time.Duration(0)
	for _, m := range g.members {
		longest = max(longest, m.rebalance)
		if m.syncing != nil {
			m.syncing <- syncResult{err: kerr.RebalanceInProgress}
			m.syncing = nil
		}
	}
	g.deadline = co.clock.Now().Add(longest)
}

func (co *coordinator) maybeCompleteJoin(g *group) {
	if g.state != groupPreparingRebalance || len(g.pending) > 0 {
		return
	}
	for _, m := range g.members {
		if m.joining == nil {
			return
		}
	}
	co.completeJoin(g)
}

// completeJoin ends the join phase: members that did not rejoin are dropped,
// a new generation starts, and the leader receives everyone's metadata.
func (co *coordinator) completeJoin(g *group) {
	for id, m := range g.members {
		if m.joining == nil {
			delete(g.members, id)
		}
	}
	g.generation++
	co.saveGeneration(g)
	if len(g.members) == 0 {
		g.state, g.leader, g.protocol = groupEmpty, "", ""
		return
	}
	ids := slices.Sorted(maps.Keys(g.members))
	if g.members[g.leader] == nil {
		g.leader = ids[0]
	}
	g.protocol = ""
	for _, p := range g.members[g.leader].protocols {
		if g.allSupport(p.Name, "") {
			g.protocol = p.Name
			break
		}
	}
	g.state = groupCompletingRebalance
	now := co.clock.Now()
	var all []kmsg.JoinGroupResponseMember
	for _, id := range ids {
		m := g.members[id]
		jm := kmsg.NewJoinGroupResponseMember()
		jm.MemberID, jm.InstanceID, jm.ProtocolMetadata = id, m.instanceID, m.metadata(g.protocol)
		all = append(all, jm)
	}
	for _, id := range ids {
		m := g.members[id]
		res := joinResult{generation: g.generation, protoType: g.protoType, protocol: g.protocol, leader: g.leader, memberID: id}
		if id == g.leader {
			res.members = all
		}
		m.joining <- res
		m.joining = nil
		m.assignment = nil
		m.lastSeen = now
	}
}

func (m *member) metadata(protocol string) []byte {
	for _, p := range m.protocols {
		if p.Name == protocol {
			return p.Metadata
		}
	}
	return nil
}

// removeMember drops a member and rebalances the others.
func (co *coordinator) removeMember(g *group, id string) {
	m := g.members[id]
	if m == nil {
		return
	}
	delete(g.members, id)
	if m.joining != nil {
		m.joining <- joinResult{err: kerr.UnknownMemberID, generation: -1}
	}
	if m.syncing != nil {
		m.syncing <- syncResult{err: kerr.UnknownMemberID}
	}
	if len(g.members) == 0 {
		g.state, g.leader, g.protocol = groupEmpty, "", ""
		g.generation++
		co.saveGeneration(g)
		return
	}
	if g.state != groupPreparingRebalance {
		co.prepareRebalance(g)
	}
	co.maybeCompleteJoin(g)
}

// member finds a member of the current generation or says why not.
func (g *group) member(id string, generation int32) (*member, *kerr.Error) {
	m := g.members[id]
	if m == nil {
		return nil, kerr.UnknownMemberID
	}
	if generation != g.generation {
		return nil, kerr.IllegalGeneration
	}
	return m, nil
}

// sync hands out the leader's assignment, waiting for it if needed.
func (co *coordinator) sync(ctx context.Context, r *kmsg.SyncGroupRequest) (syncResult, string, string) {
	co.mu.Lock()
	g := co.groups[r.Group]
	if g == nil {
		co.mu.Unlock()
		return syncResult{err: kerr.UnknownMemberID}, "", ""
	}
	protoType, protocol := g.protoType, g.protocol
	m, kerrr := g.member(r.MemberID, r.Generation)
	var wait chan syncResult
	switch {
	case kerrr != nil:
	case g.state == groupPreparingRebalance:
		kerrr = kerr.RebalanceInProgress
	case g.state == groupStable:
		m.lastSeen = co.clock.Now()
		co.mu.Unlock()
		return syncResult{assignment: m.assignment}, protoType, protocol
	case g.state == groupCompletingRebalance:
		m.syncing = make(chan syncResult, 1)
		wait = m.syncing
		if r.MemberID == g.leader {
			co.assign(g, r.GroupAssignment)
		}
	default:
		kerrr = kerr.UnknownMemberID
	}
	co.mu.Unlock()
	if wait == nil {
		return syncResult{err: kerrr}, protoType, protocol
	}
	select {
	case res := <-wait:
		return res, protoType, protocol
	case <-ctx.Done():
		return syncResult{err: kerr.RebalanceInProgress}, protoType, protocol
	}
}

// assign stores the leader's plan and answers every waiting member.
func (co *coordinator) assign(g *group, plan []kmsg.SyncGroupRequestGroupAssignment) {
	for _, a := range plan {
		if m := g.members[a.MemberID]; m != nil {
			m.assignment = a.MemberAssignment
		}
	}
	g.state = groupStable
	now := co.clock.Now()
	for _, m := range g.members {
		m.lastSeen = now
		if m.syncing != nil {
			m.syncing <- syncResult{assignment: m.assignment}
			m.syncing = nil
		}
	}
}

func (co *coordinator) heartbeat(r *kmsg.HeartbeatRequest) *kerr.Error {
	co.mu.Lock()
	defer co.mu.Unlock()
	g := co.groups[r.Group]
	if g == nil {
		return kerr.UnknownMemberID
	}
	m, kerrr := g.member(r.MemberID, r.Generation)
	if kerrr != nil {
		return kerrr
	}
	m.lastSeen = co.clock.Now()
	if g.state == groupPreparingRebalance {
		return kerr.RebalanceInProgress
	}
	return nil
}

// leave removes members; unknown ones get UNKNOWN_MEMBER_ID.
func (co *coordinator) leave(groupName string, ids []string) []*kerr.Error {
	co.mu.Lock()
	defer co.mu.Unlock()
	out := make([]*kerr.Error, len(ids))
	g := co.groups[groupName]
	for i, id := range ids {
		if g == nil || g.members[id] == nil {
			out[i] = kerr.UnknownMemberID
			continue
		}
		co.removeMember(g, id)
	}
	return out
}

// commit records offsets for a member of the current generation, or for a
// client outside any generation when the group has no members.
func (co *coordinator) commit(groupName string, generation int32, memberID string, offsets map[offsetKey]committed) *kerr.Error {
	if groupName == "" {
		return kerr.InvalidGroupID
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	g := co.groups[groupName]
	if g == nil {
		if generation >= 0 {
			return kerr.UnknownMemberID
		}
		g = newGroup(groupName)
	}
	if generation >= 0 || memberID != "" {
		m, kerrr := g.member(memberID, generation)
		if kerrr != nil {
			return kerrr
		}
		if g.state == groupCompletingRebalance {
			return kerr.RebalanceInProgress
		}
		m.lastSeen = co.clock.Now()
	} else if len(g.members) > 0 {
		return kerr.UnknownMemberID
	}
	return co.store(g, offsets)
}

// store adds offsets to a group's and saves them; called with co.mu held.
func (co *coordinator) store(g *group, offsets map[offsetKey]committed) *kerr.Error {
	old := maps.Clone(g.offsets)
	maps.Copy(g.offsets, offsets)
	if err := co.save(g); err != nil {
		g.offsets = old
		co.log.Error("storing committed offsets failed", "err", err)
		return kerr.UnknownServerError
	}
	co.groups[g.name] = g
	return nil
}

// forgetTopic drops every group's committed offsets for a deleted topic.
func (co *coordinator) forgetTopic(id uuid.UUID) {
	co.mu.Lock()
	defer co.mu.Unlock()
	for _, g := range co.groups {
		changed := false
		for k := range g.offsets {
			if k.topic == id {
				delete(g.offsets, k)
				changed = true
			}
		}
		if changed {
			if err := co.save(g); err != nil {
				co.log.Warn("dropping a deleted topic's committed offsets failed", "err", err)
			}
		}
	}
}

// deleteGroup deletes a group that has no members, with its committed
// offsets.
func (co *coordinator) deleteGroup(name string) *kerr.Error {
	co.mu.Lock()
	defer co.mu.Unlock()
	g := co.groups[name]
	switch {
	case g == nil:
		return kerr.GroupIDNotFound
	case len(g.members) > 0 || g.state != groupEmpty:
		return kerr.NonEmptyGroup
	}
	if g.storageID != "" {
		if err := co.st.DeleteMeta(groupMetaPrefix + g.storageID); err != nil {
			co.log.Warn("deleting a group's record failed", "err", err)
			return kerr.CoordinatorNotAvailable
		}
	}
	delete(co.groups, name)
	return nil
}

// deleteOffsets deletes a group's committed offsets at keys (by topic
// name), except those of topics a member subscribes to, which it returns.
func (co *coordinator) deleteOffsets(name string, keys map[string][]offsetKey) (map[string]bool, *kerr.Error) {
	co.mu.Lock()
	defer co.mu.Unlock()
	g := co.groups[name]
	if g == nil {
		return nil, kerr.GroupIDNotFound
	}
	subscribed := map[string]bool{}
	if g.protoType == "consumer" {
		for _, m := range g.members {
			var meta kmsg.ConsumerMemberMetadata
			if meta.ReadFrom(m.metadata(g.protocol)) == nil {
				for _, t := range meta.Topics {
					subscribed[t] = true
				}
			}
		}
	}
	changed := false
	for topic, ks := range keys {
		if subscribed[topic] {
			continue
		}
		for _, k := range ks {
			if _, ok := g.offsets[k]; ok {
				delete(g.offsets, k)
				changed = true
			}
		}
	}
	if changed {
		if err := co.save(g); err != nil {
			co.log.Warn("deleting committed offsets failed", "err", err)
			return nil, kerr.CoordinatorNotAvailable
		}
	}
	return subscribed, nil
}

// committedOffsets returns a group's offsets (nil if it has none).
func (co *coordinator) committedOffsets(groupName string) map[offsetKey]committed {
	co.mu.Lock()
	defer co.mu.Unlock()
	if g := co.groups[groupName]; g != nil {
		return maps.Clone(g.offsets)
	}
	return nil
}

// groupView is a consistent copy of a group for DescribeGroups/ListGroups.
type groupView struct {
	name, protoType, protocol string
	state                     groupState
	members                   []kmsg.DescribeGroupsResponseGroupMember
}

func (co *coordinator) describe(name string) groupView {
	co.mu.Lock()
	defer co.mu.Unlock()
	g := co.groups[name]
	if g == nil {
		return groupView{name: name, state: groupDead}
	}
	return g.view()
}

func (g *group) view() groupView {
	v := groupView{name: g.name, protoType: g.protoType, protocol: g.protocol, state: g.state}
	for _, id := range slices.Sorted(maps.Keys(g.members)) {
		m := g.members[id]
		dm := kmsg.NewDescribeGroupsResponseGroupMember()
		dm.MemberID, dm.InstanceID, dm.ClientID, dm.ClientHost = id, m.instanceID, m.clientID, m.clientHost
		dm.ProtocolMetadata, dm.MemberAssignment = m.metadata(g.protocol), m.assignment
		v.members = append(v.members, dm)
	}
	return v
}

func (co *coordinator) list() []groupView {
	co.mu.Lock()
	defer co.mu.Unlock()
	var out []groupView
	for _, name := range slices.Sorted(maps.Keys(co.groups)) {
		out = append(out, co.groups[name].view())
	}
	return out
}
