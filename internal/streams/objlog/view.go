package objlog

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// CodeReadOnly is the reason code of a write to a View: the deployment's
// leader writes its log, other nodes only read its metadata.
const CodeReadOnly = "LOG_READ_ONLY"

// metaKey is the change feed key of a store's metadata under MetaTopic.
const metaKey = "meta"

// MetaTopic is the change feed topic that a committed change of the store's
// metadata (topics, configs, groups, partitions) marks with the key "meta":
// nodes that hold a View of it Refresh it.
func MetaTopic(storeID string) string { return "objlog." + storeID }

// View is a deployment's metadata, read-only: what a node that does not
// lead the deployment needs to describe it (topics, configs, partitions'
// offsets). It has no bucket, no flusher, no sweep and no compaction; it
// sees what the leader committed as of its last Refresh, and every write
// fails with CodeReadOnly.
type View struct {
	db   *store.DB
	opts Options
	keys *keyring

	mu    sync.RWMutex
	meta  map[string][]byte
	parts map[string]*ViewPartition
}

// OpenView opens the metadata of the existing store opts.StoreID
// read-only, checking the DEK against it; a store that does not exist is
// NotExist.
func OpenView(ctx context.Context, db *store.DB, opts Options) (*View, error) {
	const op = "objlog.OpenView"
	kr, err := opts.keyring(op)
	if err != nil {
		return nil, err
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if err := db.Migrate(ctx, Migrations); err != nil {
		return nil, errs.Internalf(op, err)
	}
	if err := checkStoredVerifier(ctx, db, kr, opts.StoreID, op); err != nil {
		return nil, err
	}
	v := &View{db: db, opts: opts, keys: kr, meta: map[string][]byte{}, parts: map[string]*ViewPartition{}}
	if err := v.Refresh(ctx); err != nil {
		return nil, err
	}
	return v, nil
}

// Refresh re-reads the metadata and the partitions' offsets, in one read
// transaction, so the view is one committed state of the store.
// Partitions the view already returned keep their identity and report the
// new offsets; dropped ones are forgotten.
func (v *View) Refresh(ctx context.Context) error {
	meta, rows, err := readState(ctx, v.db, v.keys, v.opts.StoreID, "objlog.Refresh")
	if err != nil {
		return err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	parts := make(map[string]*ViewPartition, len(rows))
	for _, r := range rows {
		p := v.parts[r.name]
		if p == nil || p.pid != r.pid {
			p = &ViewPartition{v: v, pid: r.pid, changed: make(chan struct{})}
		}
		p.set(r)
		parts[r.name] = p
	}
	v.meta, v.parts = meta, parts
	return nil
}

func readOnly(op string) error {
	return errs.E(op, errs.Conflict, CodeReadOnly, "This node holds a read-only view of the deployment's log; its leader writes it")
}

// GetMeta returns a copy of the value stored under key.
func (v *View) GetMeta(key string) ([]byte, bool) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	val, ok := v.meta[key]
	if !ok {
		return nil, false
	}
	return slices.Clone(val), true
}

// ListMeta returns a copy of every pair whose key has prefix.
func (v *View) ListMeta(prefix string) map[string][]byte {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := map[string][]byte{}
	for k, val := range v.meta {
		if strings.HasPrefix(k, prefix) {
			out[k] = slices.Clone(val)
		}
	}
	return out
}

// PutMeta fails: the view is read-only.
func (v *View) PutMeta(string, []byte) error { return readOnly("objlog.PutMeta") }

// DeleteMeta fails: the view is read-only.
func (v *View) DeleteMeta(string) error { return readOnly("objlog.DeleteMeta") }

// DropPartition fails: the view is read-only.
func (v *View) DropPartition(string) error { return readOnly("objlog.DropPartition") }

// Partitions lists the partition names, sorted.
func (v *View) Partitions() []string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return slices.Sorted(maps.Keys(v.parts))
}

// Partition returns the named partition's view; create fails, as does a
// partition the view does not know.
func (v *View) Partition(name string, create bool) (*ViewPartition, error) {
	const op = "objlog.Partition"
	v.mu.RLock()
	defer v.mu.RUnlock()
	if p, ok := v.parts[name]; ok {
		return p, nil
	}
	if create {
		return nil, readOnly(op)
	}
	return nil, errs.E(op, errs.NotExist, CodePartitionNotFound, "The partition does not exist")
}

// ViewPartition is a partition as a View sees it: its offsets as of the
// last Refresh. It holds no index and no data: reads and writes fail with
// CodeReadOnly, for the leader serves them.
type ViewPartition struct {
	v   *View
	pid int64

	mu         sync.Mutex
	start, end int64
	changed    chan struct{}
}

func (p *ViewPartition) set(r partitionRow) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r.end != p.end || r.start != p.start {
		close(p.changed)
		p.changed = make(chan struct{})
	}
	p.start, p.end = r.start, r.end
}

func (p *ViewPartition) StartOffset() int64 { p.mu.Lock(); defer p.mu.Unlock(); return p.start }
func (p *ViewPartition) EndOffset() int64   { p.mu.Lock(); defer p.mu.Unlock(); return p.end }

// SizeBytes is the bytes of the partition's batches, read from the index
// when asked: a Refresh, which the change feed may ask for often, does not
// sum them. It is 0 when the database cannot say.
func (p *ViewPartition) SizeBytes() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), p.v.opts.RequestTimeout)
	defer cancel()
	var n int64
	err := p.v.db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM objlog_batches WHERE pid = ?`, p.pid).Scan(&n)
	})
	if err != nil {
		return 0
	}
	return n
}

// Changed is closed when a Refresh sees the partition's offsets move.
func (p *ViewPartition) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.changed
}

// OffsetForTimestamp is the end offset: the view has no index of times.
func (p *ViewPartition) OffsetForTimestamp(int64) int64 { return p.EndOffset() }

// Tail is empty: the view reads no batches.
func (p *ViewPartition) Tail(int) []seglog.BatchMeta { return nil }

// FirstBatchSize is 0: the view reads no batches.
func (p *ViewPartition) FirstBatchSize(int64) int32 { return 0 }

// AppendAsync fails: the view is read-only.
func (p *ViewPartition) AppendAsync(context.Context, seglog.BatchMeta, []byte) (int64, func() error, error) {
	return 0, nil, readOnly("objlog.AppendAsync")
}

// Read fails: the leader serves reads.
func (p *ViewPartition) Read(context.Context, int64, int32) ([]seglog.StoredBatch, error) {
	return nil, readOnly("objlog.Read")
}

// ReadAppend fails: the leader serves reads.
func (p *ViewPartition) ReadAppend(_ context.Context, _ int64, _ int32, dst []byte) ([]byte, []byte, []seglog.BatchMeta, error) {
	return dst, nil, nil, readOnly("objlog.Read")
}

// DeleteBefore fails: the view is read-only.
func (p *ViewPartition) DeleteBefore(int64) error { return readOnly("objlog.DeleteBefore") }

// Retain fails: the leader runs retention.
func (p *ViewPartition) Retain(time.Time, int64, int64) error { return readOnly("objlog.Retain") }
