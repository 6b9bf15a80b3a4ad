package broker

import (
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// Client quotas, as Kafka's (KIP-13): a byte rate for produce and one for
// fetch per entity, a user (the login's principal), a client id, or both.
// A connection's requests count against the first entity, in Kafka's order
// of precedence, that has a quota of that kind; the deployment's plan gives
// the default, per user, when none does. Rates are measured over a sliding
// window of quotaSamples samples of quotaSampleWindow each, as Kafka's
// quota.window.num and quota.window.size.seconds default to; a request that
// takes its entity over the quota is answered with the throttle time Kafka
// computes, and then the connection is muted: nothing more is read from it
// for that time (KIP-219), so a client over its quota costs the broker
// nothing meanwhile, whether it honours the throttle or not.

const (
	quotaSamples      = 11
	quotaSampleWindow = time.Second

	quotaUser     = "user"
	quotaClientID = "client-id"
	quotaIP       = "ip"

	producerByteRate = "producer_byte_rate"
	consumerByteRate = "consumer_byte_rate"

	// quotasKey is the Storage metadata record holding every quota set
	// with AlterClientQuotas.
	quotasKey = "quotas"
)

// quotaKind is what a byte rate limits.
type quotaKind int

const (
	produceQuota quotaKind = iota
	fetchQuota
)

func (k quotaKind) key() string {
	if k == produceQuota {
		return producerByteRate
	}
	return consumerByteRate
}

// quotaEntity is what a quota applies to. A component is part of the entity
// when Has is set; an empty name then stands for the default of that type
// (Kafka's <default>, a null name on the wire), since Kafka refuses empty
// names.
type quotaEntity struct {
	HasUser   bool   `json:"has_user,omitempty"`
	User      string `json:"user,omitempty"`
	HasClient bool   `json:"has_client_id,omitempty"`
	Client    string `json:"client_id,omitempty"`
}

// storedQuota is one entity's quotas in the quotasKey record.
type storedQuota struct {
	Entity quotaEntity        `json:"entity"`
	Values map[string]float64 `json:"values"`
}

// sensorKey names the rate one entity's requests of one kind are counted
// in: a quota set for a user alone is shared by all its client ids, one for
// a default user is each user's own, as in Kafka.
type sensorKey struct {
	kind         quotaKind
	user, client string
}

// quotaBook holds a broker's quotas and the rates measured against them.
type quotaBook struct {
	storage  Storage
	defaults [2]float64 // per user, by kind; 0: none

	alterMu   sync.Mutex // one AlterClientQuotas at a time
	mu        sync.Mutex
	set       map[quotaEntity]map[string]float64
	sensors   map[sensorKey]*rateSensor
	lastSweep time.Time
	// paceClock is what the pacing buckets refill by (nil: the real
	// time): they smooth bursts of real work, and a broker's Clock may be
	// a test's, standing still, under which they would never refill.
	paceClock func() time.Time
}

func (q *quotaBook) paceMillis() int64 {
	if q.paceClock != nil {
		return q.paceClock().UnixMilli()
	}
	return time.Now().UnixMilli()
}

func newQuotaBook(storage Storage, lim PlanLimits) (*quotaBook, error) {
	q := &quotaBook{storage: storage, set: map[quotaEntity]map[string]float64{}, sensors: map[sensorKey]*rateSensor{}}
	q.defaults[produceQuota] = float64(lim.ProducerByteRate)
	q.defaults[fetchQuota] = float64(lim.ConsumerByteRate)
	if err := q.reload(); err != nil {
		return nil, err
	}
	return q, nil
}

// reload reads the quotas set from storage again: a follower's view of
// the leader's, which the leader may have changed since.
func (q *quotaBook) reload() error {
	set := map[quotaEntity]map[string]float64{}
	if raw, ok := q.storage.GetMeta(quotasKey); ok {
		var stored []storedQuota
		if err := json.Unmarshal(raw, &stored); err != nil {
			return fmt.Errorf("reading the client quotas: %w", err)
		}
		for _, s := range stored {
			set[s.Entity] = s.Values
		}
	}
	q.mu.Lock()
	q.set = set
	q.mu.Unlock()
	return nil
}

// bound finds the quota of kind for a user and client id in Kafka's order:
// user and client id, user and default client, user alone, default user
// and client id, default user and default client, default user alone,
// client id alone, default client alone; then the plan's. It returns the
// quota, 0 when there is none, and the rate it is measured in. A client id
// of "" is matched by the default client's quota. q.mu is held.
func (q *quotaBook) bound(kind quotaKind, user, client string) (float64, sensorKey) {
	key := kind.key()
	candidates := [...]struct {
		e            quotaEntity
		user, client string
	}{
		{quotaEntity{HasUser: true, User: user, HasClient: true, Client: client}, user, client},
		{quotaEntity{HasUser: true, User: user, HasClient: true}, user, client},
		{quotaEntity{HasUser: true, User: user}, user, ""},
		{quotaEntity{HasUser: true, HasClient: true, Client: client}, user, client},
		{quotaEntity{HasUser: true, HasClient: true}, user, client},
		{quotaEntity{HasUser: true}, user, ""},
		{quotaEntity{HasClient: true, Client: client}, "", client},
		{quotaEntity{HasClient: true}, "", client},
	}
	for _, c := range candidates {
		if v, ok := q.set[c.e][key]; ok {
			return v, sensorKey{kind: kind, user: c.user, client: c.client}
		}
	}
	return q.defaults[kind], sensorKey{kind: kind, user: user}
}

// record counts n bytes of kind for a connection's user and client id at
// now, in place of what the request held (reserve), and returns how long
// the connection is to be throttled: 0 while its entity's rate stays
// within the quota.
func (q *quotaBook) record(kind quotaKind, user, client string, n int, held quotaHold, now time.Time) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.unhold(held)
	bound, key := q.bound(kind, user, client)
	if bound <= 0 {
		return 0
	}
	s := q.sensor(key, now)
	ms := now.UnixMilli()
	s.record(float64(n), ms)
	if kind == fetchQuota { // only fetches are paced
		s.tokens(bound, q.paceMillis())
		s.bucket -= float64(n)
	}
	return s.throttle(bound, ms, 0)
}

// quotaHold is what a fetch being read holds of its entity's allowance.
type quotaHold struct {
	key sensorKey
	n   float64
}

// release gives back what h holds.
func (q *quotaBook) release(h quotaHold) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.unhold(h)
}

// unhold is release with q.mu held.
func (q *quotaBook) unhold(h quotaHold) {
	if s, ok := q.sensors[h.key]; ok && h.n > 0 {
		s.reserved -= h.n
	}
}

// pacedThrottle is how long past its refill a fetch that found nothing
// left waits, whether the bucket is spent or held by the entity's other
// fetches being read (whose bytes are not counted yet, so Kafka's formula
// gives nothing): then it finds half a second's worth.
const pacedThrottle = quotaSampleWindow / 2

// reserve bounds a fetch's budget by its entity's allowance: what the
// quota allows over the window (as Kafka bounds a fetch's max bytes with
// ClientQuotaManager.getMaxValueInQuotaWindow), less what the window
// counts and what the entity's other fetches are reading now. It holds
// about what the fetch will read (est) until record, so that many
// connections of one user fetching at once cannot each read the whole
// allowance. Reads are also paced by a token bucket of one sample (a second
// of the quota, refilled at the quota): Kafka's sampled window lets a user
// read ten seconds of its quota at once whenever its oldest sample leaves
// the window (at the start, then every eleven seconds for a user reading
// flat out), and those bursts took the broker's cores from every other
// client; paced, a user reads at most a second's worth at once and its
// quota over any second, as KIP-599 paces controller mutations. It returns
// the budget, what it holds, and, when nothing is left, 0 and how long to
// throttle.
func (q *quotaBook) reserve(user, client string, budget int64, est func() int64, now time.Time) (int64, quotaHold, time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	bound, key := q.bound(fetchQuota, user, client)
	if bound <= 0 {
		return budget, quotaHold{}, 0
	}
	s := q.sensor(key, now)
	ms := now.UnixMilli()
	r, window := s.rate(ms)
	paced := s.tokens(bound, q.paceMillis()) - s.reserved
	// paced (at most a second of the quota) also keeps a fetch within
	// Kafka's bound of one window's worth.
	allowed := min(bound*float64(window)/1000-r*float64(window)/1000-s.reserved, paced)
	if allowed < 1 {
		// Until the window's rate is back under the quota, and the bucket
		// holds half a second's worth again: sooner, a user's many
		// connections would each come back for a sliver, every one of them
		// answered empty but for one (50 such connections asked 600 times
		// a second at 100 ms).
		refill := time.Duration(max(-paced, 0) / bound * float64(time.Second))
		return 0, quotaHold{}, max(s.throttle(bound, ms, s.reserved), refill+pacedThrottle)
	}
	budget = min(budget, int64(allowed))
	held := quotaHold{key: key, n: float64(min(budget, max(est(), 0)))}
	s.reserved += held.n
	return budget, held, 0
}

// throttled is how long a connection's entity is over its quota of kind
// now, before anything more is counted: a fetch then reads nothing.
func (q *quotaBook) throttled(kind quotaKind, user, client string, now time.Time) time.Duration {
	q.mu.Lock()
	defer q.mu.Unlock()
	bound, key := q.bound(kind, user, client)
	if bound <= 0 {
		return 0
	}
	s, ok := q.sensors[key]
	if !ok {
		return 0
	}
	return s.throttle(bound, now.UnixMilli(), s.reserved)
}

// sensor returns key's rate, made on first use. Rates idle for longer
// than the window are dropped now and then: client ids are the client's
// to choose, and must not grow the map for ever. q.mu is held.
func (q *quotaBook) sensor(key sensorKey, now time.Time) *rateSensor {
	if now.Sub(q.lastSweep) > quotaSamples*quotaSampleWindow {
		q.lastSweep = now
		idle := now.Add(-quotaSamples * quotaSampleWindow).UnixMilli()
		for k, s := range q.sensors {
			if s.last < idle && s.reserved == 0 {
				delete(q.sensors, k)
			}
		}
	}
	s, ok := q.sensors[key]
	if !ok {
		s = &rateSensor{}
		q.sensors[key] = s
	}
	return s
}

// rateSensor is Kafka's Rate over a SampledStat: samples of
// quotaSampleWindow each, the oldest reused once all are taken, a sample
// older than the whole window counting nothing.
type rateSensor struct {
	samples  [quotaSamples]rateSample
	n, cur   int     // samples in use, the current one
	last     int64   // when something was last recorded, in ms
	reserved float64 // held by fetches being read (quotaBook.reserve)
	// bucket paces reads (quotaBook.reserve): up to a second of the quota,
	// refilled at the quota, less what was read; negative after a read
	// past it. bucketAt is when it was last refilled (ms; 0: never, full).
	bucket   float64
	bucketAt int64
}

// tokens refills the bucket up to now at bound a second, to at most a
// second's worth, and returns it.
func (s *rateSensor) tokens(bound float64, now int64) float64 {
	full := bound * quotaSampleWindow.Seconds()
	if s.bucketAt == 0 {
		s.bucket = full
	} else {
		s.bucket = min(full, s.bucket+bound*float64(max(now-s.bucketAt, 0))/1000)
	}
	s.bucketAt = now
	return s.bucket
}

type rateSample struct {
	start int64 // ms
	value float64
}

const (
	sampleMs = int64(quotaSampleWindow / time.Millisecond)
	windowMs = quotaSamples * sampleMs
)

func (s *rateSensor) current(now int64) *rateSample {
	if s.n == 0 {
		s.samples[0], s.n, s.cur = rateSample{start: now}, 1, 0
	}
	return &s.samples[s.cur]
}

func (s *rateSensor) record(v float64, now int64) {
	c := s.current(now)
	if now-c.start >= sampleMs {
		s.cur = (s.cur + 1) % quotaSamples
		if s.cur >= s.n {
			s.n++
		}
		s.samples[s.cur] = rateSample{start: now}
		c = &s.samples[s.cur]
	}
	c.value += v
	s.last = now
}

// rate is the bytes per second over the window and the window's length in
// ms, as Kafka's Rate.measure and Rate.windowSize: at least the full
// samples but the current one, so that a first burst is not read as a huge
// rate.
func (s *rateSensor) rate(now int64) (float64, int64) {
	s.current(now)
	total, oldest := 0.0, now
	for i := range s.n {
		sm := &s.samples[i]
		if now-sm.start >= windowMs {
			*sm = rateSample{start: now}
		}
		total += sm.value
		oldest = min(oldest, sm.start)
	}
	elapsed := now - oldest
	if full := elapsed / sampleMs; full < quotaSamples-1 {
		elapsed += (quotaSamples - 1 - full) * sampleMs
	}
	elapsed = max(elapsed, 1)
	return total / (float64(elapsed) / 1000), elapsed
}

// throttle is Kafka's QuotaUtils.throttleTime: how long the entity must
// send nothing for its rate, with extra bytes counted too, to come back to
// bound.
func (s *rateSensor) throttle(bound float64, now int64, extra float64) time.Duration {
	r, window := s.rate(now)
	r += extra / (float64(window) / 1000)
	if r <= bound {
		return 0
	}
	ms := math.Round((r - bound) / bound * float64(window))
	return time.Duration(min(ms, math.MaxInt32)) * time.Millisecond
}

// quotaIdentity is who a connection's requests count as: the login's
// principal (an IAM ID), or its user name where the login names no
// principal, and the request's client id.
func (c *conn) quotaIdentity() (string, string) {
	s := c.sess.Load()
	if s == nil {
		return "", c.clientID
	}
	if s.principal != "" {
		return s.principal, c.clientID
	}
	return s.user, c.clientID
}

// throttle counts a produce request's bytes or a fetch response's against
// the connection's quota and sets the response's throttle time; it returns
// how long the connection is to be muted once answered.
func (c *conn) throttle(kreq kmsg.Request, frameBytes int, resp kmsg.Response) time.Duration {
	var kind quotaKind
	var n int
	switch kreq.(type) {
	case *kmsg.ProduceRequest:
		kind, n = produceQuota, frameBytes
	case *kmsg.FetchRequest:
		kind, n = fetchQuota, responseSizeHint(resp)
		if t, ok := resp.(kmsg.ThrottleResponse); ok {
			if ms, _ := t.Throttle(); ms > 0 {
				n = 0 // throttled before reading: an empty answer
			}
		}
	default:
		return 0
	}
	held := c.quotaHeld
	c.quotaHeld = quotaHold{}
	if kind == fetchQuota && resp == nil {
		c.b.quotas.release(held) // failed: nothing was sent
		return 0
	}
	user, client := c.quotaIdentity()
	d := c.b.quotas.record(kind, user, client, n, held, c.b.clock.Now())
	if t, ok := resp.(kmsg.ThrottleResponse); ok {
		if ms, _ := t.Throttle(); ms > 0 {
			d = max(d, time.Duration(ms)*time.Millisecond)
		}
	}
	if t, ok := resp.(kmsg.SetThrottleResponse); ok && d > 0 {
		t.SetThrottle(int32(d / time.Millisecond))
	}
	return d
}

// fetchThrottled answers a fetch at once, without reading, when the
// connection's entity is already over its consumer quota (another of its
// connections took it there): an empty response with the throttle time,
// as Kafka answers a throttled fetch.
func (c *conn) fetchThrottled(r *kmsg.FetchRequest) *kmsg.FetchResponse {
	user, client := c.quotaIdentity()
	d := c.b.quotas.throttled(fetchQuota, user, client, c.b.clock.Now())
	if d <= 0 {
		return nil
	}
	resp := r.ResponseKind().(*kmsg.FetchResponse)
	resp.ThrottleMillis = int32(d / time.Millisecond)
	return resp
}

// fetchQuotaBytes bounds a fetch's budget by its quota (quotaBook.reserve)
// and holds what est says it will read until the fetch is answered; 0 when
// nothing is left, the response then carrying the throttle. est is called
// only when the connection has a quota.
func (c *conn) fetchQuotaBytes(budget int64, est func() int64, resp *kmsg.FetchResponse) int64 {
	user, client := c.quotaIdentity()
	c.b.quotas.release(c.quotaHeld) // of an earlier read of the same fetch, which found too little
	var d time.Duration
	budget, c.quotaHeld, d = c.b.quotas.reserve(user, client, budget, est, c.b.clock.Now())
	resp.ThrottleMillis = int32(d / time.Millisecond)
	return budget
}

// mute reads nothing more from the connection for d: KIP-219's throttle,
// which a client that ignores the throttle time cannot get around. False
// when the connection closed meanwhile.
func (c *conn) mute(d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// alter applies changes and stores the whole set in the deployment's
// metadata before any connection sees it, so that quotas survive restarts
// and every broker opening the storage reads them.
func (q *quotaBook) alter(changes []quotaChange) error {
	q.alterMu.Lock()
	defer q.alterMu.Unlock()
	q.mu.Lock()
	next := make(map[quotaEntity]map[string]float64, len(q.set)+len(changes))
	for e, v := range q.set {
		next[e] = v
	}
	q.mu.Unlock()
	for _, ch := range changes {
		values := map[string]float64{}
		for k, v := range next[ch.entity] {
			values[k] = v
		}
		for _, k := range ch.remove {
			delete(values, k)
		}
		for k, v := range ch.set {
			values[k] = v
		}
		if len(values) == 0 {
			delete(next, ch.entity)
		} else {
			next[ch.entity] = values
		}
	}
	stored := make([]storedQuota, 0, len(next))
	for e, v := range next {
		stored = append(stored, storedQuota{Entity: e, Values: v})
	}
	raw, err := json.Marshal(stored)
	if err != nil {
		return err
	}
	if err := q.storage.PutMeta(quotasKey, raw); err != nil {
		return err
	}
	q.mu.Lock()
	q.set = next
	q.mu.Unlock()
	return nil
}

// entries returns a copy of the quotas set.
func (q *quotaBook) entries() map[quotaEntity]map[string]float64 {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make(map[quotaEntity]map[string]float64, len(q.set))
	for e, v := range q.set {
		out[e] = v // values are replaced, never changed in place
	}
	return out
}
