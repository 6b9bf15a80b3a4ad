// Package objlog is a deployment's log on object storage: batches go to an
// S3-compatible bucket as sealed objects, offsets and the index of objects
// go to the metadata database (PostgreSQL in a cluster), and every byte of
// data, topic name or group name is sealed under the deployment's data
// encryption key before it leaves the process. It implements the same
// Storage a broker uses over seglog's local disk.
package objlog

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"maps"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// Reason codes (errs.Error.Code) that callers may act on; they match
// seglog's where the meaning is the same.
const (
	CodeClosed            = seglog.CodeClosed
	CodeOffsetOutOfRange  = seglog.CodeOffsetOutOfRange
	CodeCorrupt           = seglog.CodeCorrupt
	CodeKeyMismatch       = seglog.CodeKeyMismatch
	CodePartitionNotFound = seglog.CodePartitionNotFound
	CodeFenced            = "LOG_FENCED"   // errs.Conflict: another process wrote the log
	CodeFlushFailed       = "FLUSH_FAILED" // errs.Unavailable: the batch was not stored; retry
)

// Migrations create the tables; the store runs them on Open. Nothing in
// them is plain data: names are HMACs, values sealed, objects named at
// random. Offsets, timestamps and sizes are plain, to be queried.
var Migrations = []store.Migration{{ID: "objlog/0001", SQL: `
CREATE TABLE objlog_stores (store TEXT PRIMARY KEY, verifier BLOB NOT NULL);
CREATE TABLE objlog_meta (store TEXT NOT NULL, name_hash BLOB NOT NULL, sealed BLOB NOT NULL, PRIMARY KEY (store, name_hash));
CREATE TABLE objlog_partitions (pid INTEGER PRIMARY KEY AUTOINCREMENT, store TEXT NOT NULL, name TEXT NOT NULL,
  start_offset INTEGER NOT NULL, end_offset INTEGER NOT NULL, UNIQUE (store, name));
CREATE TABLE objlog_objects (name TEXT PRIMARY KEY, store TEXT NOT NULL, dek_id TEXT NOT NULL, size INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX objlog_objects_store ON objlog_objects (store);
CREATE TABLE objlog_batches (pid INTEGER NOT NULL, base_offset INTEGER NOT NULL, last_offset INTEGER NOT NULL,
  max_ts INTEGER NOT NULL, size INTEGER NOT NULL, object TEXT NOT NULL, pos INTEGER NOT NULL, len INTEGER NOT NULL,
  PRIMARY KEY (pid, base_offset));
CREATE INDEX objlog_batches_object ON objlog_batches (object);
`}, {ID: "objlog/0002-reencryption", SQL: `
CREATE TABLE objlog_keys (store TEXT NOT NULL, key_id TEXT NOT NULL, verifier BLOB NOT NULL, PRIMARY KEY (store, key_id));
ALTER TABLE objlog_stores ADD COLUMN reenc_to TEXT NOT NULL DEFAULT '';
ALTER TABLE objlog_stores ADD COLUMN reenc_total INTEGER NOT NULL DEFAULT 0;
`}}

// Options configure a Store.
type Options struct {
	StoreID string // the deployment's ID: in every sealed value's additional data and object name
	// Keys are the deployment's DEKs: the first seals, the others (while a
	// re-encryption runs, see ReencryptTo) open what they sealed.
	Keys []*seglog.DEK
	// FlushWindow is how long the first batch of a flush waits for others
	// (default 5 ms); FlushBytes flushes sooner once that much is pending
	// (default 4 MiB).
	FlushWindow time.Duration
	FlushBytes  int
	// CacheBytes bounds the sealed chunks kept for reads (default 64 MiB).
	CacheBytes int64
	// RequestTimeout bounds each object store request (default 10 s): a
	// produce waits at most this long for its flush.
	RequestTimeout time.Duration
	// CompactEvery is how often objects under 1 MiB are rewritten into
	// larger ones (default 1 minute; negative: never, Compact only).
	CompactEvery time.Duration
	// ReadOnly opens a snapshot of the store for reading, on a node that
	// does not lead the deployment (a backup there): its key is checked and
	// its index and metadata loaded, but nothing is swept, compacted or
	// written (CodeReadOnly): the leader may be writing meanwhile.
	ReadOnly bool
	// Announced, when set, says which metadata keys' changes other nodes'
	// views need: only those PutMeta and DeleteMeta mark in the change
	// feed (MetaTopic), so that frequent writes no view reads (a group's
	// committed offsets: broker.FollowerReads) wake no node. Nil marks
	// every change. New and dropped partitions are always marked.
	Announced func(key string) bool
}

// Store is a deployment's log on a bucket and the metadata database.
//
// Guarantees and limits (this slice):
//   - An append is durable (its durable func returns nil) only once its
//     object is in the bucket and its index rows are committed.
//   - One process serves a deployment at a time: offsets are assigned in
//     memory and each flush's commit checks that the partition's end in
//     the database is still the one it started from (CodeFenced).
//   - Memory: about 100 bytes a batch of index, plus the chunk cache.
type Store struct {
	db     *store.DB
	bucket *Bucket
	opts   Options
	keys   *keyring
	cache  *chunkCache
	prefix string // every object of the store is named prefix + random hex

	closed atomic.Bool

	reencMu sync.Mutex // one re-encryption at a time

	metaMu sync.Mutex // orders metadata writes
	mu     sync.RWMutex
	meta   map[string][]byte
	parts  map[string]*Partition

	fl *flusher

	compactMu   sync.Mutex // one compaction at a time
	replacedMu  sync.Mutex
	replaced    []replacedObjects // compacted away, to delete once no read may still use them
	compactStop chan struct{}
	compactDone chan struct{}
}

var partitionName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,200}$`)

const verifierPlain = "keyline/objlog key verifier"

// ObjectPrefix is where a store's objects live in the bucket.
func ObjectPrefix(storeID string) string { return "deployments/" + storeID + "/" }

// Open opens (creating when new) the store of opts.StoreID: it checks the
// DEK, loads metadata and the partitions' index, and removes objects a
// crash left without index rows.
func Open(ctx context.Context, db *store.DB, bucket *Bucket, opts Options) (*Store, error) {
	const op = "objlog.Open"
	kr, err := opts.keyring(op)
	if err != nil {
		return nil, err
	}
	if opts.FlushWindow <= 0 {
		opts.FlushWindow = 5 * time.Millisecond
	}
	if opts.FlushBytes <= 0 {
		opts.FlushBytes = 4 << 20
	}
	if opts.CacheBytes <= 0 {
		opts.CacheBytes = 64 << 20
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = 10 * time.Second
	}
	if opts.CompactEvery == 0 {
		opts.CompactEvery = time.Minute
	}
	if err := db.Migrate(ctx, Migrations); err != nil {
		return nil, errs.Internalf(op, err)
	}
	s := &Store{db: db, bucket: bucket, opts: opts, keys: kr, cache: newChunkCache(opts.CacheBytes),
		prefix: ObjectPrefix(opts.StoreID), meta: map[string][]byte{}, parts: map[string]*Partition{}}
	if opts.ReadOnly {
		err = checkStoredVerifier(ctx, db, kr, opts.StoreID, op)
	} else {
		err = s.verifyKey(ctx, op)
	}
	if err != nil {
		return nil, err
	}
	if err := s.load(ctx, op); err != nil {
		return nil, err
	}
	if !opts.ReadOnly {
		if err := s.sweep(ctx); err != nil {
			return nil, err
		}
	}
	s.fl = newFlusher(s)
	s.compactStop, s.compactDone = make(chan struct{}), make(chan struct{})
	if opts.CompactEvery > 0 && !opts.ReadOnly {
		go s.compactLoop(opts.CompactEvery)
	} else {
		close(s.compactDone)
	}
	return s, nil
}

// keyring checks the store ID and the keys (the sealing key first) and
// returns their keyring.
func (opts Options) keyring(op string) (*keyring, error) {
	if opts.StoreID == "" || !partitionName.MatchString(opts.StoreID) {
		return nil, errs.E(op, errs.Invalid, "STORE_ID_REQUIRED", "A store ID of letters, digits, '_' or '-' is required")
	}
	if len(opts.Keys) == 0 {
		return nil, errs.E(op, errs.Invalid, "DEK_REQUIRED", "A data encryption key is required")
	}
	kr, err := newKeyring(opts.Keys...)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "DEK_INVALID", "Each data encryption key needs its own ID of 1 to 255 bytes and 32 bytes of key")
	}
	return kr, nil
}

// checkStoredVerifier checks kr against the store's verifier without
// writing: a store that does not exist is NotExist.
func checkStoredVerifier(ctx context.Context, db *store.DB, kr *keyring, storeID, op string) error {
	return db.Read(ctx, func(tx *store.Tx) error {
		var v []byte
		err := tx.QueryRow(`SELECT verifier FROM objlog_stores WHERE store = ?`, storeID).Scan(&v)
		if store.IsNoRows(err) {
			return errs.E(op, errs.NotExist, "STORE_NOT_FOUND", "The deployment has no log on object storage yet")
		}
		if err != nil {
			return errs.Internalf(op, err)
		}
		return checkVerifier(op, kr, aad("verifier", storeID), v)
	})
}

// checkVerifier refuses keys none of which sealed the store's verifier.
func checkVerifier(op string, kr *keyring, a, v []byte) error {
	plain, err := kr.open(nil, a, v)
	if err != nil || string(plain) != verifierPlain {
		return errs.E(op, errs.Unprocessable, CodeKeyMismatch, "The data encryption key does not match the key that sealed this store")
	}
	return nil
}

func (s *Store) load(ctx context.Context, op string) error {
	meta, parts, err := readState(ctx, s.db, s.keys, s.opts.StoreID, op)
	if err != nil {
		return err
	}
	s.meta = meta
	for _, r := range parts {
		p := newPartition(s, r.pid, r.name, r.start, r.end)
		if err := p.loadIndex(ctx); err != nil {
			return errs.Internalf(op, err)
		}
		s.parts[r.name] = p
	}
	return nil
}

// partitionRow is a partition's row.
type partitionRow struct {
	pid        int64
	name       string
	start, end int64
}

// readState reads, in one transaction, a store's metadata (opened with
// kr) and its partitions' rows.
func readState(ctx context.Context, db *store.DB, kr *keyring, storeID, op string) (map[string][]byte, []partitionRow, error) {
	var meta map[string][]byte
	var parts []partitionRow
	err := db.Read(ctx, func(tx *store.Tx) error {
		meta = map[string][]byte{}
		rows, err := tx.Query(`SELECT name_hash, sealed FROM objlog_meta WHERE store = ?`, storeID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var h, sealed []byte
			if err := rows.Scan(&h, &sealed); err != nil {
				return err
			}
			name, value, k, err := openMeta(kr, storeID, h, sealed)
			if err != nil {
				return errs.E(op, errs.Unprocessable, CodeCorrupt, "Stored metadata is damaged or was sealed with another key").Because(err)
			}
			if _, dup := meta[name]; dup && k != kr.current() {
				continue // a re-encryption's copy under the sealing key wins
			}
			meta[name] = value
		}
		if err := rows.Err(); err != nil {
			return err
		}
		prow, err := tx.Query(`SELECT pid, name, start_offset, end_offset FROM objlog_partitions WHERE store = ?`, storeID)
		if err != nil {
			return err
		}
		defer prow.Close()
		for prow.Next() {
			var r partitionRow
			if err := prow.Scan(&r.pid, &r.name, &r.start, &r.end); err != nil {
				return err
			}
			parts = append(parts, r)
		}
		return prow.Err()
	})
	if err != nil {
		if errs.As(err) != nil {
			return nil, nil, err
		}
		return nil, nil, errs.Internalf(op, err)
	}
	return meta, parts, nil
}

// sweep removes the store's objects that no index row names: objects of a
// flush whose commit never happened, or whose deletion was interrupted.
func (s *Store) sweep(ctx context.Context) error {
	const op = "objlog.sweep"
	ctx, cancel := context.WithTimeout(ctx, 4*s.opts.RequestTimeout)
	defer cancel()
	names, err := s.bucket.list(ctx, s.prefix)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	err = s.db.Read(ctx, func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT name FROM objlog_objects WHERE store = ?`, s.opts.StoreID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				return err
			}
			known[n] = true
		}
		return rows.Err()
	})
	if err != nil {
		return errs.Internalf(op, err)
	}
	var orphans []string
	for _, n := range names {
		if !known[n] {
			orphans = append(orphans, n)
		}
	}
	return s.bucket.remove(ctx, orphans)
}

func (s *Store) usable(op string) error {
	if s.closed.Load() {
		return errs.E(op, errs.Conflict, CodeClosed, "The log store is closed")
	}
	return nil
}

// writable is usable, for a change: refused in a ReadOnly snapshot.
func (s *Store) writable(op string) error {
	if s.opts.ReadOnly {
		return readOnly(op)
	}
	return s.usable(op)
}

// Close flushes what is pending and stops the flusher. Calls after Close
// fail with Conflict.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	close(s.compactStop)
	<-s.compactDone
	s.fl.close()
	return nil
}

// sealMeta seals a metadata pair: the plain part holds the name too, so
// that ListMeta can list names it cannot read from the hash.
func (s *Store) sealMeta(key *dekKey, h []byte, name string, value []byte) []byte {
	plain := binary.AppendUvarint(make([]byte, 0, 8+len(name)+len(value)), uint64(len(name)))
	plain = append(append(plain, name...), value...)
	return key.seal(nil, aad("meta", s.opts.StoreID, h), plain)
}

// openMeta opens a metadata row, returning the key that sealed it.
func openMeta(kr *keyring, storeID string, h, sealed []byte) (string, []byte, *dekKey, error) {
	plain, key, err := kr.openKey(nil, aad("meta", storeID, h), sealed)
	if err != nil {
		return "", nil, nil, err
	}
	n, k := binary.Uvarint(plain)
	if k <= 0 || uint64(len(plain)-k) < n {
		return "", nil, nil, errAuth
	}
	name := string(plain[k : k+int(n)])
	if string(key.nameHash(name)) != string(h) {
		return "", nil, nil, errAuth // a row moved to another name's hash
	}
	return name, plain[k+int(n):], key, nil
}

// putMetaRow stores a metadata pair under key, and removes its rows under
// the store's other keys (a re-encryption leaves one row per name).
func (s *Store) putMetaRow(tx *store.Tx, key *dekKey, name string, value []byte) error {
	h := key.nameHash(name)
	if _, err := tx.Exec(`INSERT INTO objlog_meta (store, name_hash, sealed) VALUES (?, ?, ?)
			ON CONFLICT (store, name_hash) DO UPDATE SET sealed = excluded.sealed`, s.opts.StoreID, h, s.sealMeta(key, h, name, value)); err != nil {
		return err
	}
	for _, o := range s.keys.others() {
		if _, err := tx.Exec(`DELETE FROM objlog_meta WHERE store = ? AND name_hash = ?`, s.opts.StoreID, o.nameHash(name)); err != nil {
			return err
		}
	}
	return nil
}

// GetMeta returns a copy of the value stored under key.
func (s *Store) GetMeta(key string) ([]byte, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.meta[key]
	if !ok || s.closed.Load() {
		return nil, false
	}
	return append([]byte(nil), v...), true
}

// ListMeta returns a copy of every pair whose key has prefix.
func (s *Store) ListMeta(prefix string) map[string][]byte {
	out := map[string][]byte{}
	if s.closed.Load() {
		return out
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	for k, v := range s.meta {
		if len(k) >= len(prefix) && k[:len(prefix)] == prefix {
			out[k] = append([]byte(nil), v...)
		}
	}
	return out
}

// announce marks a change of the metadata key in tx for the nodes that
// hold a View, when they need it.
func (s *Store) announce(tx *store.Tx, key string) {
	if s.opts.Announced == nil || s.opts.Announced(key) {
		tx.Changed(MetaTopic(s.opts.StoreID), metaKey)
	}
}

// PutMeta stores value under key; it is committed when it returns.
func (s *Store) PutMeta(key string, value []byte) error {
	const op = "objlog.PutMeta"
	if err := s.writable(op); err != nil {
		return err
	}
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	err := s.db.Tx(context.Background(), func(tx *store.Tx) error {
		err := s.putMetaRow(tx, s.keys.current(), key, value)
		s.announce(tx, key)
		return err
	})
	if err != nil {
		return errs.Internalf(op, err)
	}
	s.mu.Lock()
	s.meta[key] = append([]byte(nil), value...)
	s.mu.Unlock()
	return nil
}

// DeleteMeta removes key.
func (s *Store) DeleteMeta(key string) error {
	const op = "objlog.DeleteMeta"
	if err := s.writable(op); err != nil {
		return err
	}
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	err := s.db.Tx(context.Background(), func(tx *store.Tx) error {
		for _, k := range append(s.keys.others(), s.keys.current()) {
			if _, err := tx.Exec(`DELETE FROM objlog_meta WHERE store = ? AND name_hash = ?`, s.opts.StoreID, k.nameHash(key)); err != nil {
				return err
			}
		}
		s.announce(tx, key)
		return nil
	})
	if err != nil {
		return errs.Internalf(op, err)
	}
	s.mu.Lock()
	delete(s.meta, key)
	s.mu.Unlock()
	return nil
}

// Partitions lists the partition names, sorted.
func (s *Store) Partitions() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Sorted(maps.Keys(s.parts))
}

// Partition returns the named partition, creating it when create is set.
func (s *Store) Partition(name string, create bool) (*Partition, error) {
	return s.partition("objlog.Partition", name, create, 0, false)
}

// CreatePartitionAt creates an empty partition whose log starts at start
// (a restore); Conflict if it exists.
func (s *Store) CreatePartitionAt(name string, start int64) (*Partition, error) {
	return s.partition("objlog.CreatePartitionAt", name, true, start, true)
}

// partition returns the named partition, creating it (its log starting at
// start) when create is set; an existing one is a Conflict when onlyNew.
func (s *Store) partition(op, name string, create bool, start int64, onlyNew bool) (*Partition, error) {
	if !partitionName.MatchString(name) {
		return nil, errs.E(op, errs.Invalid, "PARTITION_NAME_INVALID", "A partition name is 1 to 200 letters, digits, '_' or '-'").On("field", "name")
	}
	if start < 0 {
		return nil, errs.E(op, errs.Invalid, "START_OFFSET_INVALID", "A partition's start offset is not negative").On("field", "start")
	}
	if err := s.usable(op); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.parts[name]; ok {
		if onlyNew {
			return nil, errs.E(op, errs.Conflict, "PARTITION_EXISTS", "The partition already exists")
		}
		return p, nil
	}
	if !create {
		return nil, errs.E(op, errs.NotExist, CodePartitionNotFound, "The partition does not exist")
	}
	if err := s.writable(op); err != nil {
		return nil, err
	}
	var pid int64
	err := s.db.Tx(context.Background(), func(tx *store.Tx) error {
		if _, err := tx.Exec(`INSERT INTO objlog_partitions (store, name, start_offset, end_offset) VALUES (?, ?, ?, ?)`, s.opts.StoreID, name, start, start); err != nil {
			return err
		}
		tx.Changed(MetaTopic(s.opts.StoreID), metaKey)
		return tx.QueryRow(`SELECT pid FROM objlog_partitions WHERE store = ? AND name = ?`, s.opts.StoreID, name).Scan(&pid)
	})
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	p := newPartition(s, pid, name, start, start)
	s.parts[name] = p
	return p, nil
}

// DropPartition removes a partition, its index rows and then its objects.
func (s *Store) DropPartition(name string) error {
	const op = "objlog.DropPartition"
	if err := s.writable(op); err != nil {
		return err
	}
	s.mu.Lock()
	p, ok := s.parts[name]
	delete(s.parts, name)
	s.mu.Unlock()
	if !ok {
		return errs.E(op, errs.NotExist, CodePartitionNotFound, "The partition does not exist")
	}
	// No flush commits for it from here: the flusher holds commitMu.
	s.fl.commitMu.Lock()
	p.dropped.Store(true)
	s.fl.commitMu.Unlock()
	return s.deleteRows(op, func(tx *store.Tx) error {
		if _, err := tx.Exec(`DELETE FROM objlog_batches WHERE pid = ?`, p.pid); err != nil {
			return err
		}
		_, err := tx.Exec(`DELETE FROM objlog_partitions WHERE pid = ?`, p.pid)
		tx.Changed(MetaTopic(s.opts.StoreID), metaKey)
		return err
	})
}

// deleteRows runs del, then in the same transaction forgets the objects no
// row names any more, and deletes those from the bucket. An object whose
// deletion fails is left to the next Open's sweep.
func (s *Store) deleteRows(op string, del func(*store.Tx) error) error {
	var gone []string
	err := s.db.Tx(context.Background(), func(tx *store.Tx) error {
		if err := del(tx); err != nil {
			return err
		}
		rows, err := tx.Query(`SELECT name FROM objlog_objects o WHERE store = ? AND NOT EXISTS (SELECT 1 FROM objlog_batches b WHERE b.object = o.name)`, s.opts.StoreID)
		if err != nil {
			return err
		}
		gone = gone[:0]
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				rows.Close()
				return err
			}
			gone = append(gone, n)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, n := range gone {
			if _, err := tx.Exec(`DELETE FROM objlog_objects WHERE name = ?`, n); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return errs.Internalf(op, err)
	}
	for _, n := range gone {
		s.cache.dropObject(n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
	defer cancel()
	if err := s.bucket.remove(ctx, gone); err != nil {
		return nil // the rows are gone; the sweep removes the objects
	}
	return nil
}

// SizeBytes is the bytes stored by all partitions.
func (s *Store) SizeBytes() int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var n int64
	for _, p := range s.parts {
		n += p.SizeBytes()
	}
	return n
}

// Destroy removes every row and object of a store: for a deployment that is
// deleted. It needs no key.
func Destroy(ctx context.Context, db *store.DB, bucket *Bucket, storeID string) error {
	const op = "objlog.Destroy"
	if err := db.Migrate(ctx, Migrations); err != nil {
		return errs.Internalf(op, err)
	}
	err := db.Tx(ctx, func(tx *store.Tx) error {
		for _, q := range []string{
			`DELETE FROM objlog_batches WHERE pid IN (SELECT pid FROM objlog_partitions WHERE store = ?)`,
			`DELETE FROM objlog_partitions WHERE store = ?`,
			`DELETE FROM objlog_objects WHERE store = ?`,
			`DELETE FROM objlog_meta WHERE store = ?`,
			`DELETE FROM objlog_keys WHERE store = ?`,
			`DELETE FROM objlog_stores WHERE store = ?`,
		} {
			if _, err := tx.Exec(q, storeID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return errs.Internalf(op, err)
	}
	names, err := bucket.list(ctx, ObjectPrefix(storeID))
	if err != nil {
		return err
	}
	return bucket.remove(ctx, names)
}

func randomName() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Exists reports whether the database holds a store of storeID: a
// deployment whose log is on object storage, which a process without the
// object store must not open as an empty local disk.
func Exists(ctx context.Context, db *store.DB, storeID string) (bool, error) {
	var n int
	err := db.Read(ctx, func(tx *store.Tx) error {
		if err := tx.QueryRow(`SELECT COUNT(*) FROM schema_migrations WHERE id = ?`, Migrations[0].ID).Scan(&n); err != nil || n == 0 {
			return err
		}
		return tx.QueryRow(`SELECT COUNT(*) FROM objlog_stores WHERE store = ?`, storeID).Scan(&n)
	})
	if err != nil {
		return false, errs.Internalf("objlog.Exists", err)
	}
	return n > 0, nil
}
