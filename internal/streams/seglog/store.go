package seglog

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"github.com/keyline/keyline/internal/durable"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/keyline/keyline/internal/errs"
)

// Reason codes (errs.Error.Code) that callers may act on.
const (
	CodeClosed            = "STORE_CLOSED"        // errs.Conflict: the store is closed
	CodeFailed            = "STORE_FAILED"        // errs.Unavailable: an fsync failed; reopen
	CodeOffsetOutOfRange  = "OFFSET_OUT_OF_RANGE" // errs.Invalid: below StartOffset or above EndOffset
	CodeCorrupt           = "DATA_CORRUPT"        // errs.Unprocessable: damaged or moved blocks
	CodeKeyMismatch       = "DEK_MISMATCH"        // errs.Unprocessable: a DEK is not the one with its ID
	CodeKeyMissing        = "DEK_MISSING"         // errs.Unprocessable: data sealed by a DEK not supplied
	CodePartitionNotFound = "PARTITION_NOT_FOUND" // errs.NotExist
)

// Options configure a Store.
type Options struct {
	StoreID      string // goes into every block's additional data (the deployment's id)
	Keys         []*DEK // Keys[0] seals new blocks; all of them may open blocks
	Sync         bool   // fsync before Append returns (group commit); PutMeta always syncs
	SegmentBytes int64  // roll segments at this size (default 64 MiB)
	// Unsealed stores blocks without encryption (a CRC32C stands in for the
	// tag). BENCHMARK ONLY: it exists so benchmarks can show what encryption
	// costs. The server never sets it, and a store written one way refuses
	// to open the other way.
	Unsealed bool
}

const defaultSegmentBytes = 64 << 20

// Store is a deployment's disk. Layout of its directory:
//
//	LOCK                  flock held while open
//	keys.check            one sealed verifier block per DEK that may have sealed data
//	meta.<gen>.journal    the metadata journal
//	p/<partition>/<base>.log, <base>.idx
//	trash/                dropped partitions, removed on the next open
//
// Guarantees and limits:
//   - With Options.Sync an acknowledged Append survives a crash; Open cuts a
//     torn or garbled tail of an active segment or of the journal, and
//     refuses (Unprocessable) damage followed by intact blocks.
//   - Every block authenticates its place; moving, swapping or copying
//     blocks or files between partitions, stores or journal generations
//     fails. Replacing a file with an older copy of itself (rollback), or
//     cutting an active segment exactly at a block boundary, cannot be told
//     from an older state of the log.
//   - Memory: the active segment's batch entries (about 72 bytes a batch)
//     and a few sealed segments' entries per partition.
type Store struct {
	dir    string
	opts   Options
	keys   atomic.Pointer[keyring]
	commit *groupCommit
	meta   *metaJournal
	lock   *os.File
	closed atomic.Bool
	// aheadBytes is what the partitions' read-aheads may hold at once;
	// aheadHits counts reads served from them (for tests).
	aheadBytes atomic.Int64
	aheadHits  atomic.Int64
	// aheadStarts counts the read-aheads started (for tests).
	aheadStarts atomic.Int64
	reenc       sync.Mutex // one re-encryption at a time

	// blocks holds buffers that blocks are sealed into before they are
	// written, shared by the partitions: a batch of up to a few MiB is
	// sealed without allocating (and zeroing) a buffer of its size.
	blocks sync.Pool

	mu       sync.RWMutex
	parts    map[string]*Partition
	checkIDs []string // key IDs with a verifier in keys.check
}

var partitionName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,200}$`)

const checkPlain = "keyline/seglog key verifier"

// Open opens or creates the store in dir. It cuts torn tails left by a
// crash and refuses keys that do not match the data.
func Open(dir string, opts Options) (*Store, error) {
	const op = "seglog.Open"
	if opts.StoreID == "" {
		return nil, errs.E(op, errs.Invalid, "STORE_ID_REQUIRED", "A store ID is required")
	}
	if !opts.Unsealed && len(opts.Keys) == 0 {
		return nil, errs.E(op, errs.Invalid, "DEK_REQUIRED", "At least one data encryption key is required")
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = defaultSegmentBytes
	}
	all, err := newKeyring(opts.StoreID, opts.Unsealed, opts.Keys)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "DEK_INVALID", "Each data encryption key needs a unique ID of 1 to 255 bytes and 32 bytes of key")
	}
	for _, d := range []string{dir, filepath.Join(dir, "p"), filepath.Join(dir, "trash")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, errs.Internalf(op, err)
		}
	}
	s := &Store{dir: dir, opts: opts, commit: newGroupCommit(), parts: map[string]*Partition{}}
	if s.lock, err = lockDir(dir); err != nil {
		return nil, errs.E(op, errs.Conflict, "STORE_IN_USE", "The store directory is open in another process").Because(err)
	}
	if err := s.load(op, all); err != nil {
		s.closeFiles()
		return nil, err
	}
	return s, nil
}

func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (s *Store) load(op string, all *keyring) error {
	// A keys.check replacement that died before its rename may hold an old
	// key's verifier.
	if err := os.Remove(filepath.Join(s.dir, "keys.check"+rewriteExt)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return errs.Internalf(op, err)
	}
	if err := os.RemoveAll(filepath.Join(s.dir, "trash")); err != nil {
		return errs.Internalf(op, err)
	}
	if err := os.MkdirAll(filepath.Join(s.dir, "trash"), 0o700); err != nil {
		return errs.Internalf(op, err)
	}
	kr, err := s.verifyKeys(op, all)
	if err != nil {
		return err
	}
	s.keys.Store(kr)
	if s.meta, err = openMeta(s.dir, kr); err != nil {
		return dataError(op, err)
	}
	des, err := os.ReadDir(filepath.Join(s.dir, "p"))
	if err != nil {
		return errs.Internalf(op, err)
	}
	for _, de := range des {
		if !de.IsDir() || !partitionName.MatchString(de.Name()) {
			continue
		}
		p, err := s.loadPartition(de.Name(), kr)
		if err != nil {
			return dataError(op, err)
		}
		s.parts[p.name] = p
	}
	// A new sealing key gets its verifier only once the data opened, so a
	// refused open leaves the directory as it was.
	if err := s.addKeyCheck(kr); err != nil {
		return errs.Internalf(op, err)
	}
	return nil
}

// verifyKeys checks the supplied DEKs against keys.check, so that a wrong
// key is refused before any tail is judged torn: a block that fails under a
// verified key is damage, not a key mismatch. It returns the keyring the
// store works with: the sealing key plus every other supplied key that has
// a verifier (a key without one never sealed anything here).
func (s *Store) verifyKeys(op string, all *keyring) (*keyring, error) {
	path := filepath.Join(s.dir, "keys.check")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if !all.unsealed && s.hasData() {
			return nil, errs.E(op, errs.Unprocessable, CodeCorrupt, "The store's key verifier file is missing (or the store was written unsealed)")
		}
		b, err = nil, nil
	}
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	if all.unsealed {
		if len(b) > 0 {
			return nil, errs.E(op, errs.Unprocessable, "STORE_SEALED", "The store is sealed and cannot be opened unsealed")
		}
		return all, nil
	}
	verified := map[string]bool{}
	var ids []string
	pos := 0
	for pos < len(b) {
		h, err := parseHeader(b[pos:])
		if err != nil || h.blockLen() > len(b)-pos {
			return nil, errs.E(op, errs.Unprocessable, CodeCorrupt, "The store's key verifier file is damaged")
		}
		ids = append(ids, h.keyID)
		if _, ok := all.aeads[h.keyID]; ok {
			plain, err := all.openCopy(b[pos:], h, blockID{kind: kindCheck, pos: int64(pos)})
			if err != nil || string(plain) != checkPlain {
				return nil, errs.E(op, errs.Unprocessable, CodeKeyMismatch, "A data encryption key does not match the key that sealed this store")
			}
			verified[h.keyID] = true
		}
		pos += h.blockLen()
	}
	s.checkIDs = ids
	kr := &keyring{storeID: all.storeID, current: all.current, aeads: map[string]cipher.AEAD{}, shift: all.shift}
	for id, a := range all.aeads {
		if verified[id] || id == all.current {
			kr.aeads[id] = a
		}
	}
	return kr, nil
}

// hasData reports whether the directory holds a journal or partitions.
func (s *Store) hasData() bool {
	des, _ := os.ReadDir(s.dir)
	for _, de := range des {
		if _, ok := journalGen(de.Name()); ok {
			return true
		}
	}
	des, _ = os.ReadDir(filepath.Join(s.dir, "p"))
	return len(des) > 0
}

// writeKeyCheck replaces keys.check with a verifier for kr's sealing key
// only: the last step of re-encryption, after which nothing opens with an
// old key.
func (s *Store) writeKeyCheck(kr *keyring) error {
	b := kr.seal(nil, blockID{kind: kindCheck}, []byte(checkPlain))
	if err := writeFileAtomic(filepath.Join(s.dir, "keys.check"), b); err != nil {
		return err
	}
	s.mu.Lock()
	s.checkIDs = []string{kr.current}
	s.mu.Unlock()
	return nil
}

// addKeyCheck appends a verifier for kr's sealing key before it seals data.
func (s *Store) addKeyCheck(kr *keyring) error {
	if kr.unsealed {
		return nil
	}
	path := filepath.Join(s.dir, "keys.check")
	b, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if slices.Contains(s.checkIDs, kr.current) {
		return nil
	}
	b = kr.seal(b, blockID{kind: kindCheck, pos: int64(len(b))}, []byte(checkPlain))
	if err := writeFileAtomic(path, b); err != nil {
		return err
	}
	s.checkIDs = append(s.checkIDs, kr.current)
	return nil
}

// dataError turns a failure to load stored data into an errs value whose
// message names no data.
func dataError(op string, err error) error {
	switch {
	case errs.As(err) != nil:
		return err
	case errors.Is(err, errUnknownKey):
		return errs.E(op, errs.Unprocessable, CodeKeyMissing, "Stored data is sealed with a data encryption key that was not supplied").Because(err)
	case errors.Is(err, errMode):
		return errs.E(op, errs.Unprocessable, "STORE_MODE", "Stored data was written in another sealing mode").Because(err)
	case errors.Is(err, errAuth), errors.Is(err, errHeader), errors.Is(err, errShort),
		errors.Is(err, errBatch), errors.Is(err, errIndex), errors.Is(err, errRecord),
		errors.Is(err, errGap), errors.Is(err, errPartitionRecord):
		return errs.E(op, errs.Unprocessable, CodeCorrupt, "Stored data is damaged or was sealed with another key").Because(err)
	}
	return errs.Internalf(op, err)
}

func closedError(op string) error {
	return errs.E(op, errs.Conflict, CodeClosed, "The log store is closed")
}

// usable is nil when the store accepts calls.
func (s *Store) usable(op string) error {
	if s.closed.Load() {
		return closedError(op)
	}
	if err := s.commit.failed(); err != nil {
		return errs.E(op, errs.Unavailable, CodeFailed, "The log store failed to sync to disk and accepts no writes").Because(err)
	}
	return nil
}

// Close syncs and closes every file. Calls after Close fail with Conflict.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	return s.closeFiles()
}

func (s *Store) closeFiles() error {
	var first error
	s.mu.RLock()
	for _, p := range s.parts {
		if err := p.close(); err != nil && first == nil {
			first = err
		}
	}
	s.mu.RUnlock()
	if s.meta != nil {
		if err := s.meta.close(); err != nil && first == nil {
			first = err
		}
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
	}
	if first != nil {
		return errs.Internalf("seglog.Close", first)
	}
	return nil
}

// GetMeta returns a copy of the value stored under key.
func (s *Store) GetMeta(key string) ([]byte, bool) {
	if s.closed.Load() {
		return nil, false
	}
	return s.meta.get(nsUser, key)
}

// PutMeta stores value under key; it is durable when it returns.
func (s *Store) PutMeta(key string, value []byte) error {
	return s.writeMeta("seglog.PutMeta", opPut, nsUser, key, value)
}

// DeleteMeta removes key.
func (s *Store) DeleteMeta(key string) error {
	return s.writeMeta("seglog.DeleteMeta", opDel, nsUser, key, nil)
}

func (s *Store) writeMeta(op string, rop, ns byte, key string, value []byte) error {
	if err := s.usable(op); err != nil {
		return err
	}
	if len(value) > maxBodyLen/2 {
		return errs.E(op, errs.TooLarge, "VALUE_TOO_LARGE", "The metadata value is too large")
	}
	f, err := s.meta.write(&s.keys, rop, ns, key, value)
	if err != nil {
		return errs.Internalf(op, err)
	}
	// Metadata (committed offsets, topic configs, log-start offsets) is
	// durable on return whatever Options.Sync says: losing it would move
	// consumers or resurrect deleted records. Group commit keeps it cheap.
	if err := s.commit.wait(f); err != nil {
		return errs.Internalf(op, err)
	}
	return nil
}

// ListMeta returns a copy of every key-value pair whose key has prefix.
func (s *Store) ListMeta(prefix string) map[string][]byte {
	if s.closed.Load() {
		return map[string][]byte{}
	}
	return s.meta.list(nsUser, prefix)
}

// maxPooledBlock bounds the buffers kept for sealing: a rare huge batch
// does not pin its buffer.
const maxPooledBlock = 8 << 20

func (s *Store) blockBuf() *[]byte {
	if b, ok := s.blocks.Get().(*[]byte); ok {
		return b
	}
	return new([]byte)
}

func (s *Store) putBlockBuf(b *[]byte) {
	if cap(*b) <= maxPooledBlock {
		s.blocks.Put(b)
	}
}

// Partitions lists the partition names, sorted.
func (s *Store) Partitions() []string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return slices.Sorted(maps.Keys(s.parts))
}

// Partition returns the named partition, creating it when create is set.
func (s *Store) Partition(name string, create bool) (*Partition, error) {
	const op = "seglog.Partition"
	if !partitionName.MatchString(name) {
		return nil, errs.E(op, errs.Invalid, "PARTITION_NAME_INVALID", "A partition name is 1 to 200 letters, digits, '_' or '-'").On("field", "name")
	}
	if err := s.usable(op); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.parts[name]; ok {
		return p, nil
	}
	if !create {
		return nil, errs.E(op, errs.NotExist, CodePartitionNotFound, "The partition does not exist")
	}
	return s.createPartitionLocked(op, name, 0)
}

// CreatePartitionAt creates an empty partition whose log-start and end
// offsets are start, so that its first append lands at start: a restore
// rebuilds a partition whose older offsets retention had removed. It is
// durable on return, and Conflict when the partition exists.
func (s *Store) CreatePartitionAt(name string, start int64) (*Partition, error) {
	const op = "seglog.CreatePartitionAt"
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
	if _, ok := s.parts[name]; ok {
		return nil, errs.E(op, errs.Conflict, "PARTITION_EXISTS", "The partition already exists")
	}
	return s.createPartitionLocked(op, name, start)
}

// createPartitionLocked records and creates a partition starting at start;
// the caller holds s.mu.
func (s *Store) createPartitionLocked(op, name string, start int64) (*Partition, error) {
	// The record goes first: a directory always has one (DropPartition
	// removes them in the opposite order).
	incarnation := make([]byte, incarnationLen)
	rand.Read(incarnation)
	if err := s.writeMeta(op, opPut, nsPartition, name, partitionRecord(start, incarnation)); err != nil {
		return nil, err
	}
	if err := os.Mkdir(filepath.Join(s.dir, "p", name), 0o700); err != nil {
		return nil, errs.Internalf(op, err)
	}
	if err := durable.SyncDir(filepath.Join(s.dir, "p")); err != nil {
		return nil, errs.Internalf(op, err)
	}
	p, err := s.loadPartition(name, s.keys.Load())
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	s.parts[name] = p
	return p, nil
}

// DropPartition removes a partition and its data.
func (s *Store) DropPartition(name string) error {
	const op = "seglog.DropPartition"
	if err := s.usable(op); err != nil {
		return err
	}
	s.mu.Lock()
	p, ok := s.parts[name]
	delete(s.parts, name)
	s.mu.Unlock()
	if !ok {
		return errs.E(op, errs.NotExist, CodePartitionNotFound, "The partition does not exist")
	}
	p.mu.Lock()
	p.dropped = true
	p.closeSegments()
	p.mu.Unlock()
	// Move it out of p/ first so a crash cannot leave half a partition that
	// the next open would load; trash/ is emptied on open.
	trash, err := os.MkdirTemp(filepath.Join(s.dir, "trash"), "")
	if err == nil {
		err = os.Rename(p.dir, filepath.Join(trash, name))
	}
	if err == nil {
		err = durable.SyncDir(filepath.Join(s.dir, "p"))
	}
	if err == nil {
		err = s.writeMeta(op, opDel, nsPartition, name, nil)
	}
	if err == nil {
		err = os.RemoveAll(trash)
	}
	if err != nil {
		return errs.Internalf(op, err)
	}
	return nil
}

// KeyIDsInUse lists the IDs of the DEKs that sealed any block on disk.
func (s *Store) KeyIDsInUse() []string { return s.keyIDs(true) }

// keyIDs lists the key IDs of data, index and metadata blocks, and with
// verifiers those of keys.check too.
func (s *Store) keyIDs(verifiers bool) []string {
	set := map[string]bool{}
	s.mu.RLock()
	if verifiers {
		for _, id := range s.checkIDs {
			set[id] = true
		}
	}
	parts := make([]*Partition, 0, len(s.parts))
	for _, p := range s.parts {
		parts = append(parts, p)
	}
	s.mu.RUnlock()
	for _, id := range s.meta.keyIDs() {
		set[id] = true
	}
	for _, p := range parts {
		p.keyIDs(set)
	}
	delete(set, "")
	ids := make([]string, 0, len(set))
	for id := range set {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// SizeBytes is the bytes stored by all partitions and the metadata.
func (s *Store) SizeBytes() int64 {
	n := s.meta.sizeBytes()
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, p := range s.parts {
		n += p.SizeBytes()
	}
	return n
}
