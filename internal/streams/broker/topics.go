package broker

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/keyline/keyline/internal/errs"
)

// TopicInfo describes a topic to callers outside the package.
type TopicInfo struct {
	Name       string
	ID         string
	Partitions int32
	Configs    map[string]string // only the ones set on the topic
}

// topic is a topic in memory. parts is replaced, never changed in place, so
// a reader may keep a snapshot.
type topic struct {
	id       uuid.UUID
	name     string
	settings atomic.Pointer[topicSettings]
	parts    []*partition
}

func (c *catalog) info(t *topic) TopicInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return TopicInfo{Name: t.name, ID: t.id.String(), Partitions: int32(len(t.parts)), Configs: maps.Clone(t.settings.Load().set)}
}

// topicRecord is a topic's durable form under "topic/<id>"; the key holds
// only the id, the name lives in the (encrypted) value.
type topicRecord struct {
	ID         string            `json:"id"`
	Name       string            `json:"name"`
	Partitions int32             `json:"partitions"`
	Configs    map[string]string `json:"configs,omitempty"`
}

const topicMetaPrefix = "topic/"

// catalog holds the deployment's topics.
type catalog struct {
	st  Storage
	log *slog.Logger

	onDelete func(uuid.UUID) // told after a topic is deleted

	limits PlanLimits

	mu     sync.RWMutex
	byName map[string]*topic
	byID   map[uuid.UUID]*topic
}

func openCatalog(st Storage, log *slog.Logger) (*catalog, error) {
	c := &catalog{st: st, log: log, byName: map[string]*topic{}, byID: map[uuid.UUID]*topic{}}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// reload re-reads the topics from storage, keeping the topics and
// partitions it already has: a follower's catalog after the leader changed
// the topics. It changes nothing when any record cannot be read.
func (c *catalog) reload() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	byName, byID := map[string]*topic{}, map[uuid.UUID]*topic{}
	type update struct {
		t        *topic
		settings *topicSettings
		parts    []*partition
	}
	var updates []update
	for key, val := range c.st.ListMeta(topicMetaPrefix) {
		var rec topicRecord
		if err := json.Unmarshal(val, &rec); err != nil {
			return fmt.Errorf("topic record %s: %w", key, err)
		}
		id, err := uuid.Parse(rec.ID)
		if err != nil {
			return fmt.Errorf("topic record %s: %w", key, err)
		}
		t := c.byID[id]
		if t == nil || t.name != rec.Name {
			t = &topic{id: id, name: rec.Name}
		}
		settings := newSettings(rec.Configs)
		parts := t.parts[:min(len(t.parts), int(rec.Partitions)):min(len(t.parts), int(rec.Partitions))]
		for i := int32(len(parts)); i < rec.Partitions; i++ {
			p, err := openPartition(c.st, id, i, false)
			if err != nil {
				return fmt.Errorf("topic record %s partition %d: %w", key, i, err)
			}
			parts = append(parts, p)
		}
		applyRoll(settings, parts)
		byName[rec.Name] = t
		byID[id] = t
		updates = append(updates, update{t, settings, parts})
	}
	for _, u := range updates {
		u.t.settings.Store(u.settings)
		u.t.parts = u.parts
	}
	c.byName, c.byID = byName, byID
	return nil
}

// ReloadTopics re-reads the topics from Storage's metadata: a follower's,
// after the leader changed them.
func (b *Broker) ReloadTopics() error {
	if err := b.topics.reload(); err != nil {
		return errs.Internalf("broker.ReloadTopics", err)
	}
	return nil
}

func partitionName(id uuid.UUID, index int32) string {
	return hex.EncodeToString(id[:]) + "-" + strconv.Itoa(int(index))
}

func (c *catalog) byNameOrNil(name string) *topic {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byName[name]
}

func (c *catalog) byIDOrNil(id uuid.UUID) *topic {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.byID[id]
}

// partitions is a snapshot of t's partitions.
func (c *catalog) partitions(t *topic) []*partition {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return t.parts
}

// partition finds one partition, or the Kafka error saying why not.
func (c *catalog) partition(t *topic, index int32) (*partition, *kerr.Error) {
	if t == nil {
		return nil, kerr.UnknownTopicOrPartition
	}
	parts := c.partitions(t)
	if index < 0 || int(index) >= len(parts) {
		return nil, kerr.UnknownTopicOrPartition
	}
	return parts[index], nil
}

// list is every topic sorted by name.
func (c *catalog) list() []*topic {
	c.mu.RLock()
	defer c.mu.RUnlock()
	ts := slices.Collect(maps.Values(c.byName))
	slices.SortFunc(ts, func(a, b *topic) int { return strings.Compare(a.name, b.name) })
	return ts
}

func (c *catalog) save(t *topic, partitions int32) error {
	return c.saveRecord(t, partitions, t.settings.Load().set)
}

func (c *catalog) saveRecord(t *topic, partitions int32, configs map[string]string) error {
	rec, err := json.Marshal(topicRecord{ID: t.id.String(), Name: t.name, Partitions: partitions, Configs: configs})
	if err != nil {
		return err
	}
	return c.st.PutMeta(topicMetaPrefix+t.id.String(), rec)
}

// validTopicName is Kafka's rule: 1-249 of [a-zA-Z0-9._-], not "." or "..".
func validTopicName(name string) error {
	const op = "broker.CreateTopic"
	if name == "" || name == "." || name == ".." || len(name) > 249 {
		return errs.E(op, errs.Invalid, kerr.InvalidTopicException.Message, "topic names are 1 to 249 characters and not '.' or '..'").On("field", "name")
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return errs.E(op, errs.Invalid, kerr.InvalidTopicException.Message, "topic names may contain only letters, digits, '.', '_' and '-'").On("field", "name")
		}
	}
	return nil
}

func (c *catalog) validateCreate(name string, partitions, max int32, configs map[string]string) error {
	const op = "broker.CreateTopic"
	if err := validTopicName(name); err != nil {
		return err
	}
	if partitions < 1 || partitions > max {
		return errs.Ef(op, errs.Invalid, kerr.InvalidPartitions.Message, "partitions must be between 1 and %d", max).On("field", "partitions")
	}
	if err := validateConfigs(op, configs, c.limits); err != nil {
		return err
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.byName[name] != nil {
		return errs.E(op, errs.Conflict, kerr.TopicAlreadyExists.Message, "a topic with this name already exists")
	}
	return c.checkPlanPartitions(op, partitions)
}

func (c *catalog) create(name string, partitions, max int32, configs map[string]string) (*topic, error) {
	const op = "broker.CreateTopic"
	if err := c.validateCreate(name, partitions, max, configs); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byName[name] != nil { // lost a race with another create
		return nil, errs.E(op, errs.Conflict, kerr.TopicAlreadyExists.Message, "a topic with this name already exists")
	}
	if err := c.checkPlanPartitions(op, partitions); err != nil {
		return nil, err
	}
	t := &topic{id: uuid.New(), name: name}
	t.settings.Store(newSettings(configs))
	for i := range partitions {
		p, err := openPartition(c.st, t.id, i, true)
		if err != nil {
			c.dropPartitions(t.id, i)
			return nil, errs.Internalf(op, err)
		}
		t.parts = append(t.parts, p)
	}
	applyRoll(t.settings.Load(), t.parts)
	if err := c.save(t, partitions); err != nil {
		c.dropPartitions(t.id, partitions)
		return nil, errs.Internalf(op, err)
	}
	c.byName[name] = t
	c.byID[t.id] = t
	c.log.Debug("topic created", "topic_id", t.id.String(), "partitions", partitions)
	return t, nil
}

func (c *catalog) dropPartitions(id uuid.UUID, n int32) {
	for i := range n {
		if err := c.st.DropPartition(partitionName(id, i)); err != nil {
			c.log.Warn("dropping a partition failed", "topic_id", id.String(), "partition", i, "err", err)
		}
	}
}

// delete forgets the topic first and drops its data second, so that a crash
// in between leaves unreachable data rather than a topic without partitions.
func (c *catalog) delete(t *topic) error {
	const op = "broker.DeleteTopic"
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byID[t.id] != t {
		return errs.E(op, errs.NotExist, kerr.UnknownTopicOrPartition.Message, "the topic does not exist")
	}
	if err := c.st.DeleteMeta(topicMetaPrefix + t.id.String()); err != nil {
		return errs.Internalf(op, err)
	}
	delete(c.byName, t.name)
	delete(c.byID, t.id)
	c.dropPartitions(t.id, int32(len(t.parts)))
	if c.onDelete != nil {
		c.onDelete(t.id)
	}
	c.log.Debug("topic deleted", "topic_id", t.id.String())
	return nil
}

// grow raises t's partition count to total.
func (c *catalog) grow(t *topic, total, max int32, validateOnly bool) error {
	const op = "broker.CreatePartitions"
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byID[t.id] != t {
		return errs.E(op, errs.NotExist, kerr.UnknownTopicOrPartition.Message, "the topic does not exist")
	}
	have := int32(len(t.parts))
	if total <= have {
		return errs.Ef(op, errs.Invalid, kerr.InvalidPartitions.Message, "the topic has %d partitions; the new count must be higher", have)
	}
	if total > max {
		return errs.Ef(op, errs.Invalid, kerr.InvalidPartitions.Message, "at most %d partitions per topic", max)
	}
	if err := c.checkPlanPartitions(op, total-have); err != nil {
		return err
	}
	if validateOnly {
		return nil
	}
	parts := slices.Clone(t.parts)
	for i := have; i < total; i++ {
		p, err := openPartition(c.st, t.id, i, true)
		if err != nil {
			return errs.Internalf(op, err)
		}
		parts = append(parts, p)
	}
	applyRoll(t.settings.Load(), parts)
	if err := c.save(t, total); err != nil {
		return errs.Internalf(op, err)
	}
	t.parts = parts
	return nil
}

// kafkaError maps a catalog error to its Kafka error code and message.
func kafkaError(err error) (int16, *string) {
	if err == nil {
		return 0, nil
	}
	e := errs.As(err)
	if e == nil || e.Kind == errs.Internal {
		return kerr.KafkaStorageError.Code, nil
	}
	msg := e.Msg
	for _, k := range []*kerr.Error{kerr.TopicAlreadyExists, kerr.InvalidTopicException, kerr.InvalidPartitions,
		kerr.InvalidConfig, kerr.InvalidReplicationFactor, kerr.UnknownTopicOrPartition, kerr.InvalidRequest, kerr.PolicyViolation} {
		if e.Code == k.Message {
			return k.Code, &msg
		}
	}
	return kerr.UnknownServerError.Code, &msg
}

// CreateTopic creates a topic with configs (see topicConfigSpecs).
func (b *Broker) CreateTopic(_ context.Context, name string, partitions int32, configs map[string]string) (TopicInfo, error) {
	if err := b.leaderOnly("broker.CreateTopic"); err != nil {
		return TopicInfo{}, err
	}
	t, err := b.topics.create(name, partitions, b.cfg.MaxPartitions, configs)
	if err != nil {
		return TopicInfo{}, err
	}
	return b.topics.info(t), nil
}

// DeleteTopic deletes a topic and its data.
func (b *Broker) DeleteTopic(_ context.Context, name string) error {
	if err := b.leaderOnly("broker.DeleteTopic"); err != nil {
		return err
	}
	t := b.topics.byNameOrNil(name)
	if t == nil {
		return errs.E("broker.DeleteTopic", errs.NotExist, kerr.UnknownTopicOrPartition.Message, "the topic does not exist")
	}
	return b.topics.delete(t)
}

// Topics lists the topics sorted by name.
func (b *Broker) Topics(context.Context) []TopicInfo {
	var out []TopicInfo
	for _, t := range b.topics.list() {
		out = append(out, b.topics.info(t))
	}
	return out
}

// Topic describes one topic.
func (b *Broker) Topic(_ context.Context, name string) (TopicInfo, error) {
	t := b.topics.byNameOrNil(name)
	if t == nil {
		return TopicInfo{}, errs.E("broker.Topic", errs.NotExist, kerr.UnknownTopicOrPartition.Message, "the topic does not exist")
	}
	return b.topics.info(t), nil
}
