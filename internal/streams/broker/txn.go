package broker

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/keyline/keyline/internal/streams/seglog"
)

// Transactions. A transactional id maps, in the sealed metadata, to its
// producer id and epoch and to its transaction in progress: the partitions
// added (each with the log's end offset when it was added, a lower bound of
// its first record, which is what the last stable offset and the aborted
// index use), the groups and the offsets waiting for the commit. Ending a
// transaction writes a control batch (the marker) to each partition; an
// abort also records (producer id, first offset, marker offset) in the
// partition's aborted index, one metadata key each, so read_committed
// fetches can name the aborted ranges after a restart too.
const (
	txnMetaPrefix     = "txn/id/"
	abortedMetaPrefix = "txn/aborted/" // + partition name + "/" + marker offset

	// maxTxnTimeout is Kafka's transaction.max.timeout.ms default.
	maxTxnTimeout = 15 * time.Minute
	// txnTick is how often expired transactions are looked for.
	txnTick = 250 * time.Millisecond
)

type txnState string

const (
	txnEmpty         txnState = ""
	txnOngoing       txnState = "ongoing"
	txnPrepareCommit txnState = "prepare-commit"
	txnPrepareAbort  txnState = "prepare-abort"
)

// txnPartition is a partition in a transaction; First is the log's end
// offset when it was added, at or before the transaction's first record.
type txnPartition struct {
	TopicID   uuid.UUID `json:"topic_id"`
	Partition int32     `json:"partition"`
	First     int64     `json:"first"`
}

// txnOffset is an offset a transaction commits for a group.
type txnOffset struct {
	Group     string    `json:"group"`
	TopicID   uuid.UUID `json:"topic_id"`
	Partition int32     `json:"partition"`
	committed
}

// txnRecord is what the metadata holds of a transactional id.
type txnRecord struct {
	ID         string         `json:"id"`
	ProducerID int64          `json:"producer_id"`
	Epoch      int16          `json:"epoch"`
	TimeoutMs  int32          `json:"timeout_ms"`
	State      txnState       `json:"state"`
	Started    int64          `json:"started_ms,omitempty"`
	Partitions []txnPartition `json:"partitions,omitempty"`
	Groups     []string       `json:"groups,omitempty"`
	Offsets    []txnOffset    `json:"offsets,omitempty"`
}

// transaction is a transactional id's state. Produce holds mu for reading
// across its check and its append, so that a marker is never written while
// one of the transaction's batches is on its way into the log.
type transaction struct {
	mu  sync.RWMutex
	rec txnRecord
}

// abortedTxn is an entry of a partition's aborted index.
type abortedTxn struct {
	ProducerID int64 `json:"producer_id"`
	First      int64 `json:"first"`
	Last       int64 `json:"-"` // the abort marker's offset
}

// txnCoordinator keeps the transactions of a broker. Lock order: a
// transaction's mu, then the coordinator's.
type txnCoordinator struct {
	st        Storage
	clock     Clock
	log       *slog.Logger
	topics    *catalog
	groups    *coordinator
	producers *producerIDs

	mu      sync.Mutex
	byID    map[string]*transaction
	byPID   map[int64]*transaction
	open    map[offsetKey]map[int64]int64 // partition -> producer id -> first offset
	aborted map[offsetKey][]abortedTxn    // by marker offset
}

func newTxnCoordinator(st Storage, clock Clock, log *slog.Logger, topics *catalog, groups *coordinator, producers *producerIDs) *txnCoordinator {
	return &txnCoordinator{st: st, clock: clock, log: log, topics: topics, groups: groups, producers: producers,
		byID: map[string]*transaction{}, byPID: map[int64]*transaction{}, open: map[offsetKey]map[int64]int64{}, aborted: map[offsetKey][]abortedTxn{}}
}

// load reads the transactions and aborted indexes back and finishes the
// transactions a restart caught between their decision and their markers.
// Open transactions stay open: their producer may still end them, or they
// are aborted by a new epoch or their timeout.
func (tc *txnCoordinator) load(ctx context.Context) error {
	names := map[string]offsetKey{}
	for _, t := range tc.topics.list() {
		for i := range tc.topics.partitions(t) {
			names[partitionName(t.id, int32(i))] = offsetKey{t.id, int32(i)}
		}
	}
	for key, v := range tc.st.ListMeta(abortedMetaPrefix) {
		rest := strings.TrimPrefix(key, abortedMetaPrefix)
		i := strings.LastIndexByte(rest, '/')
		var a abortedTxn
		if i < 0 || json.Unmarshal(v, &a) != nil {
			return fmt.Errorf("aborted transaction entry %q does not decode", key)
		}
		last, err := strconv.ParseInt(rest[i+1:], 10, 64)
		pk, ok := names[rest[:i]]
		if err != nil || !ok { // a deleted topic's entry
			if err := tc.st.DeleteMeta(key); err != nil {
				return err
			}
			continue
		}
		a.Last = last
		tc.aborted[pk] = append(tc.aborted[pk], a)
	}
	for _, list := range tc.aborted {
		slices.SortFunc(list, func(a, b abortedTxn) int { return int(a.Last - b.Last) })
	}
	for _, v := range tc.st.ListMeta(txnMetaPrefix) {
		t := &transaction{}
		if err := json.Unmarshal(v, &t.rec); err != nil {
			return fmt.Errorf("a transaction record does not decode: %w", err)
		}
		tc.byID[t.rec.ID], tc.byPID[t.rec.ProducerID] = t, t
		for _, p := range t.rec.Partitions {
			tc.markOpen(offsetKey{p.TopicID, p.Partition}, t.rec.ProducerID, p.First)
		}
		switch t.rec.State {
		case txnPrepareCommit, txnPrepareAbort:
			if kerrr := tc.finish(ctx, t, t.rec.State == txnPrepareCommit); kerrr != nil {
				return fmt.Errorf("finishing transaction: %v", kerrr)
			}
		}
	}
	return nil
}

func (tc *txnCoordinator) markOpen(k offsetKey, pid, first int64) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.open[k] == nil {
		tc.open[k] = map[int64]int64{}
	}
	tc.open[k][pid] = first
}

// save writes a transaction's record; called with t.mu held.
func (tc *txnCoordinator) save(t *transaction) error {
	buf, err := json.Marshal(t.rec)
	if err != nil {
		return err
	}
	return tc.st.PutMeta(txnMetaPrefix+t.rec.ID, buf)
}

// fenced is the error an older epoch gets: PRODUCER_FENCED for the request
// versions that know it (KIP-588), INVALID_PRODUCER_EPOCH before.
func fenced(newer bool) *kerr.Error {
	if newer {
		return kerr.ProducerFenced
	}
	return kerr.InvalidProducerEpoch
}

// lookup finds the transaction a request names, locked, and checks that
// the producer is its current one. The caller unlocks.
func (tc *txnCoordinator) lookup(txnID string, pid int64, epoch int16, newer bool) (*transaction, *kerr.Error) {
	tc.mu.Lock()
	t := tc.byID[txnID]
	tc.mu.Unlock()
	if t == nil {
		return nil, kerr.InvalidProducerIDMapping
	}
	t.mu.Lock()
	switch {
	case t.rec.ProducerID != pid:
		t.mu.Unlock()
		return nil, kerr.InvalidProducerIDMapping
	case epoch != t.rec.Epoch:
		t.mu.Unlock()
		return nil, fenced(newer)
	case t.rec.State == txnPrepareCommit || t.rec.State == txnPrepareAbort:
		t.mu.Unlock()
		return nil, kerr.ConcurrentTransactions
	}
	return t, nil
}

// initProducer gives a transactional id its producer id at a new epoch,
// fencing every older one; a transaction the old epoch left open is
// aborted first.
func (tc *txnCoordinator) initProducer(ctx context.Context, txnID string, timeoutMs int32, pid int64, epoch int16, newer bool) (int64, int16, *kerr.Error) {
	if timeoutMs <= 0 || time.Duration(timeoutMs)*time.Millisecond > maxTxnTimeout {
		return -1, -1, kerr.InvalidTransactionTimeout
	}
	tc.mu.Lock()
	t := tc.byID[txnID]
	if t == nil {
		t = &transaction{rec: txnRecord{ID: txnID, ProducerID: -1, Epoch: -1}}
		tc.byID[txnID] = t
	}
	tc.mu.Unlock()
	t.mu.Lock()
	defer t.mu.Unlock()
	if pid >= 0 && (pid != t.rec.ProducerID || epoch != t.rec.Epoch) {
		return -1, -1, fenced(newer) // KIP-360: only the current producer may bump its own epoch
	}
	if t.rec.State != txnEmpty {
		if kerrr := tc.finish(ctx, t, t.rec.State == txnPrepareCommit); kerrr != nil {
			return -1, -1, kerrr
		}
	}
	prev := t.rec.ProducerID
	if t.rec.ProducerID < 0 || t.rec.Epoch >= math.MaxInt16-1 {
		id, err := tc.producers.next()
		if err != nil {
			tc.log.Error("allocating a producer id failed", "err", err)
			return -1, -1, kerr.CoordinatorNotAvailable
		}
		t.rec.ProducerID, t.rec.Epoch = id, 0
	} else {
		t.rec.Epoch++
	}
	t.rec.TimeoutMs = timeoutMs
	if err := tc.save(t); err != nil {
		tc.log.Error("storing a transactional id failed", "err", err)
		return -1, -1, kerr.CoordinatorNotAvailable
	}
	tc.mu.Lock()
	delete(tc.byPID, prev)
	tc.byPID[t.rec.ProducerID] = t
	tc.mu.Unlock()
	return t.rec.ProducerID, t.rec.Epoch, nil
}

// begin starts the transaction if it is not yet; called with t.mu held.
func (tc *txnCoordinator) begin(t *transaction) {
	if t.rec.State == txnEmpty {
		t.rec.State, t.rec.Started = txnOngoing, tc.clock.Now().UnixMilli()
	}
}

// addPartition adds a partition to the transaction; called with t.mu held,
// the record saved by the caller.
func (tc *txnCoordinator) addPartition(t *transaction, id uuid.UUID, p *partition) {
	for _, tp := range t.rec.Partitions {
		if tp.TopicID == id && tp.Partition == p.index {
			return
		}
	}
	tc.begin(t)
	first := p.log.EndOffset()
	t.rec.Partitions = append(t.rec.Partitions, txnPartition{TopicID: id, Partition: p.index, First: first})
	tc.markOpen(offsetKey{id, p.index}, t.rec.ProducerID, first)
}

// admitProduce checks a transactional batch against its producer's
// transaction and returns what releases the transaction once the batch is
// appended.
func (tc *txnCoordinator) admitProduce(m seglog.BatchMeta, id uuid.UUID, index int32) (func(), *kerr.Error) {
	tc.mu.Lock()
	t := tc.byPID[m.ProducerID]
	tc.mu.Unlock()
	if t == nil {
		return nil, kerr.InvalidProducerIDMapping
	}
	t.mu.RLock()
	switch {
	case t.rec.ProducerID != m.ProducerID:
		t.mu.RUnlock()
		return nil, kerr.InvalidProducerIDMapping
	case m.ProducerEpoch != t.rec.Epoch:
		t.mu.RUnlock()
		return nil, kerr.InvalidProducerEpoch
	case t.rec.State != txnOngoing || !slices.ContainsFunc(t.rec.Partitions, func(tp txnPartition) bool { return tp.TopicID == id && tp.Partition == index }):
		t.mu.RUnlock()
		return nil, kerr.InvalidTxnState
	}
	return t.mu.RUnlock, nil
}

// end commits or aborts the producer's transaction.
func (tc *txnCoordinator) end(ctx context.Context, txnID string, pid int64, epoch int16, commit, newer bool) *kerr.Error {
	t, kerrr := tc.lookup(txnID, pid, epoch, newer)
	if kerrr != nil {
		return kerrr
	}
	defer t.mu.Unlock()
	if t.rec.State != txnOngoing {
		return kerr.InvalidTxnState
	}
	return tc.finish(ctx, t, commit)
}

// finish writes the decision, then the markers, then applies the offsets
// (commit only) and empties the transaction; called with t.mu held. A
// restart after the decision finishes it on load.
func (tc *txnCoordinator) finish(ctx context.Context, t *transaction, commit bool) *kerr.Error {
	t.rec.State = txnPrepareAbort
	if commit {
		t.rec.State = txnPrepareCommit
	}
	if err := tc.save(t); err != nil {
		tc.log.Error("storing a transaction's decision failed", "err", err)
		return kerr.CoordinatorNotAvailable
	}
	for _, tp := range t.rec.Partitions {
		p, kerrr := tc.topics.partition(tc.topics.byIDOrNil(tp.TopicID), tp.Partition)
		if kerrr != nil {
			continue // the topic was deleted meanwhile
		}
		k := offsetKey{tp.TopicID, tp.Partition}
		last, err := p.appendMarker(ctx, t.rec.ProducerID, t.rec.Epoch, commit, tc.clock.Now())
		if err == nil && !commit {
			err = tc.recordAbort(k, abortedTxn{ProducerID: t.rec.ProducerID, First: tp.First, Last: last})
		}
		if err != nil {
			tc.log.Error("writing a transaction marker failed", "topic_id", tp.TopicID.String(), "partition", tp.Partition, "err", err)
			return kerr.KafkaStorageError
		}
		tc.mu.Lock()
		delete(tc.open[k], t.rec.ProducerID)
		tc.mu.Unlock()
	}
	if commit {
		for _, g := range t.rec.Groups {
			offsets := map[offsetKey]committed{}
			for _, o := range t.rec.Offsets {
				if o.Group == g {
					offsets[offsetKey{o.TopicID, o.Partition}] = o.committed
				}
			}
			if kerrr := tc.groups.commitTxn(g, offsets); kerrr != nil {
				return kerrr
			}
		}
	}
	t.rec.State, t.rec.Started, t.rec.Partitions, t.rec.Groups, t.rec.Offsets = txnEmpty, 0, nil, nil, nil
	if err := tc.save(t); err != nil {
		tc.log.Error("storing a transaction's end failed", "err", err)
		return kerr.CoordinatorNotAvailable
	}
	return nil
}

// recordAbort adds an entry to a partition's aborted index, durably.
func (tc *txnCoordinator) recordAbort(k offsetKey, a abortedTxn) error {
	buf, err := json.Marshal(a)
	if err != nil {
		return err
	}
	if err := tc.st.PutMeta(abortedKey(k, a.Last), buf); err != nil {
		return err
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.aborted[k] = append(tc.aborted[k], a)
	return nil
}

// stableOffset is the partition's last stable offset: the first offset of
// its earliest open transaction, or end when there is none.
func (tc *txnCoordinator) stableOffset(id uuid.UUID, index int32, end int64) int64 {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	for _, first := range tc.open[offsetKey{id, index}] {
		end = min(end, first)
	}
	return end
}

// abortedList is a copy of a partition's aborted index.
func (tc *txnCoordinator) abortedList(id uuid.UUID, index int32) []abortedTxn {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return slices.Clone(tc.aborted[offsetKey{id, index}])
}

// abortedIn lists the aborted transactions with records in [from, to].
func (tc *txnCoordinator) abortedIn(id uuid.UUID, index int32, from, to int64) []kmsg.FetchResponseTopicPartitionAbortedTransaction {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	list := tc.aborted[offsetKey{id, index}]
	i, _ := slices.BinarySearchFunc(list, from, func(a abortedTxn, off int64) int { return int(a.Last - off) })
	var out []kmsg.FetchResponseTopicPartitionAbortedTransaction
	for _, a := range list[i:] {
		if a.First <= to {
			at := kmsg.NewFetchResponseTopicPartitionAbortedTransaction()
			at.ProducerID, at.FirstOffset = a.ProducerID, a.First
			out = append(out, at)
		}
	}
	return out
}

// pendingOffset reports whether a transaction holds an offset for the
// group's partition that it has not committed yet.
func (tc *txnCoordinator) pendingOffset(group string, id uuid.UUID, index int32) bool {
	tc.mu.Lock()
	all := slices.Collect(maps.Values(tc.byID))
	tc.mu.Unlock()
	for _, t := range all {
		t.mu.RLock()
		pending := slices.ContainsFunc(t.rec.Offsets, func(o txnOffset) bool {
			return o.Group == group && o.TopicID == id && o.Partition == index
		})
		t.mu.RUnlock()
		if pending {
			return true
		}
	}
	return false
}

// run aborts expired transactions and trims the aborted indexes until done
// closes.
func (tc *txnCoordinator) run(done <-chan struct{}) {
	every(done, txnTick, func() { tc.expire(); tc.trimAborted() })
}

// trimAborted drops the aborted index entries of records retention or
// DeleteRecords removed, and those of deleted topics.
func (tc *txnCoordinator) trimAborted() {
	type trim struct {
		k    offsetKey
		upto int // entries [0, upto) go
	}
	var trims []trim
	tc.mu.Lock()
	for k, list := range tc.aborted {
		start := int64(math.MaxInt64) // a deleted topic: every entry goes
		if p, kerrr := tc.topics.partition(tc.topics.byIDOrNil(k.topic), k.partition); kerrr == nil {
			start = p.log.StartOffset()
		}
		n := 0
		for n < len(list) && list[n].Last < start {
			n++
		}
		if n > 0 {
			trims = append(trims, trim{k, n})
		}
	}
	tc.mu.Unlock()
	for _, tr := range trims {
		tc.mu.Lock()
		gone := slices.Clone(tc.aborted[tr.k][:tr.upto])
		tc.mu.Unlock()
		for _, a := range gone {
			if err := tc.st.DeleteMeta(abortedKey(tr.k, a.Last)); err != nil {
				tc.log.Error("trimming the aborted transaction index failed", "err", err)
				return
			}
		}
		tc.mu.Lock()
		tc.aborted[tr.k] = slices.Delete(tc.aborted[tr.k], 0, tr.upto)
		if len(tc.aborted[tr.k]) == 0 {
			delete(tc.aborted, tr.k)
		}
		tc.mu.Unlock()
	}
}

// abortedKey is the metadata key of an aborted index entry.
func abortedKey(k offsetKey, last int64) string {
	return fmt.Sprintf("%s%s/%020d", abortedMetaPrefix, partitionName(k.topic, k.partition), last)
}

// every calls f every period until done closes.
func every(done <-chan struct{}, period time.Duration, f func()) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			f()
		}
	}
}

// expire aborts every transaction older than its timeout and bumps its
// epoch, so that its producer learns, on its next request, that it was
// fenced.
func (tc *txnCoordinator) expire() {
	tc.mu.Lock()
	all := slices.Collect(maps.Values(tc.byID))
	tc.mu.Unlock()
	now := tc.clock.Now().UnixMilli()
	for _, t := range all {
		t.mu.Lock()
		if t.rec.State == txnOngoing && now-t.rec.Started > int64(t.rec.TimeoutMs) {
			if kerrr := tc.finish(context.Background(), t, false); kerrr == nil && t.rec.Epoch < math.MaxInt16-1 {
				t.rec.Epoch++
				if err := tc.save(t); err != nil {
					tc.log.Error("storing a transactional id failed", "err", err)
				}
			}
		}
		t.mu.Unlock()
	}
}

// appendMarker writes a transaction's COMMIT or ABORT control batch and
// returns its offset once it is durable. The marker's log header carries
// no producer id: it takes no part in the producer's sequences.
func (p *partition) appendMarker(ctx context.Context, pid int64, epoch int16, commit bool, now time.Time) (int64, error) {
	data := markerBatch(pid, epoch, commit, now.UnixMilli())
	p.mu.Lock()
	base, durable, err := p.log.AppendAsync(ctx, seglog.BatchMeta{Records: 1, FirstTimestamp: now.UnixMilli(), MaxTimestamp: now.UnixMilli(), ProducerID: -1, BaseSequence: -1}, data)
	if err == nil {
		p.lastDurable = durable
	}
	p.mu.Unlock()
	if err == nil && durable != nil {
		err = durable()
	}
	return base, err
}

// markerBatch encodes a control batch of one record: key version 0 and
// type (0 abort, 1 commit), value version 0 and coordinator epoch 0.
func markerBatch(pid int64, epoch int16, commit bool, ts int64) []byte {
	typ := byte(0)
	if commit {
		typ = 1
	}
	rec := kmsg.NewRecord()
	rec.Key = []byte{0, 0, 0, typ}
	rec.Value = []byte{0, 0, 0, 0, 0, 0}
	rec.Length = int32(len(rec.AppendTo(nil)) - 1) // a zero Length is one varint byte
	recBytes := rec.AppendTo(nil)
	b := kmsg.NewRecordBatch()
	b.Magic = 2
	b.Attributes = attrTransactional | attrControl
	b.FirstTimestamp, b.MaxTimestamp = ts, ts
	b.ProducerID, b.ProducerEpoch, b.FirstSequence = pid, epoch, -1
	b.NumRecords = 1
	b.Records = recBytes
	raw := b.AppendTo(nil)
	b.Length = int32(len(raw) - batchLengthOverhead)
	raw = b.AppendTo(raw[:0])
	b.CRC = int32(crc32.Checksum(raw[batchCRCStart:], castagnoli))
	return b.AppendTo(raw[:0])
}

// transactional reports whether a validated produced batch is part of a
// transaction.
func transactional(data []byte) bool {
	return len(data) >= batchHeaderLen && data[22]&attrTransactional != 0
}

// commitTxn applies a committed transaction's offsets to a group, whoever
// its members are now: they were checked when the offsets were sent.
func (co *coordinator) commitTxn(groupName string, offsets map[offsetKey]committed) *kerr.Error {
	co.mu.Lock()
	defer co.mu.Unlock()
	g := co.groups[groupName]
	if g == nil {
		g = newGroup(groupName)
	}
	return co.store(g, offsets)
}

// checkMember checks a TxnOffsetCommit's group generation and member
// (KIP-447), so that a zombie consumer's producer cannot commit; a request
// without them (generation -1) is not checked.
func (co *coordinator) checkMember(groupName string, generation int32, memberID string) *kerr.Error {
	if groupName == "" {
		return kerr.InvalidGroupID
	}
	if generation < 0 && memberID == "" {
		return nil
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	g := co.groups[groupName]
	if g == nil {
		return kerr.UnknownMemberID
	}
	_, kerrr := g.member(memberID, generation)
	return kerrr
}

// txnAllowed is the one check every transactional request makes of its
// caller: Writer on the transactional id (a txnid policy, or a role on the
// whole deployment or cluster).
func (c *conn) txnAllowed(txnID string) *kerr.Error {
	if !c.authorizeTxnID(txnID) {
		return kerr.TransactionalIDAuthorizationFailed
	}
	if txnID == "" {
		return kerr.InvalidRequest
	}
	return nil
}
