package seglog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/keyline/keyline/internal/durable"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// The metadata store is a key-value map kept as a journal of sealed
// records, one block each. A journal file belongs to a generation; the
// generation is part of every block's identity, so records cannot be moved
// between files. Compaction writes the live map as a new generation and
// then removes the old file, so a crash leaves one complete journal.
type metaJournal struct {
	mu        sync.Mutex
	dir       string
	gen       int64
	f         *os.File
	size      int64
	live      [2]map[string][]byte // by namespace
	liveBytes int64
	keys      map[string]int // blocks per sealing key ID
}

// Namespaces keep the store's own records (partition log-start offsets)
// apart from the caller's keys, whatever bytes those contain.
const (
	nsUser      = 0
	nsPartition = 1
)

const (
	opPut = 1
	opDel = 2

	compactMinBytes = 1 << 20
)

var errRecord = errors.New("metadata record is malformed")

func journalName(gen int64) string { return fmt.Sprintf("meta.%d.journal", gen) }

func journalGen(name string) (int64, bool) {
	s, ok := strings.CutPrefix(name, "meta.")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, ".journal")
	if !ok {
		return 0, false
	}
	g, err := strconv.ParseInt(s, 10, 64)
	return g, err == nil && g >= 0
}

// openMeta loads the newest journal in dir, cutting a torn tail, and removes
// older generations left by a compaction that died after its rename.
func openMeta(dir string, kr *keyring) (*metaJournal, error) {
	j := &metaJournal{dir: dir, live: [2]map[string][]byte{{}, {}}, keys: map[string]int{}}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	gens := []int64{}
	for _, de := range des {
		if g, ok := journalGen(de.Name()); ok {
			gens = append(gens, g)
		} else if strings.HasPrefix(de.Name(), "meta.") && strings.HasSuffix(de.Name(), rewriteExt) {
			if err := os.Remove(filepath.Join(dir, de.Name())); err != nil {
				return nil, err
			}
		}
	}
	for _, g := range gens {
		j.gen = max(j.gen, g)
	}
	for _, g := range gens {
		if g != j.gen {
			if err := os.Remove(filepath.Join(dir, journalName(g))); err != nil {
				return nil, err
			}
		}
	}
	j.f, err = os.OpenFile(filepath.Join(dir, journalName(j.gen)), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	st, err := j.f.Stat()
	if err == nil {
		var b []byte
		if b, err = readAll(j.f, st.Size()); err == nil {
			j.size, err = scanBlocks(b, kr, j.id(), func(_ int64, _ int, keyID string, plain []byte) error {
				j.keys[keyID]++
				return j.apply(plain)
			})
		}
		if err == nil && j.size < st.Size() {
			err = cutTail(j.f, j.size)
		}
	}
	if err != nil {
		j.f.Close()
		return nil, err
	}
	return j, nil
}

// cutTail truncates a torn tail and makes the cut durable before anything
// is written after it.
func cutTail(f *os.File, size int64) error {
	if err := f.Truncate(size); err != nil {
		return err
	}
	return f.Sync()
}

func (j *metaJournal) id() blockID { return blockID{kind: kindMeta, base: j.gen} }

func encodeRecord(op, ns byte, key string, value []byte) []byte {
	b := make([]byte, 0, 2+binary.MaxVarintLen64+len(key)+len(value))
	b = append(b, op, ns)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	return append(b, value...)
}

func (j *metaJournal) apply(rec []byte) error {
	if len(rec) < 2 || rec[1] > nsPartition {
		return errRecord
	}
	op, ns := rec[0], rec[1]
	n, w := binary.Uvarint(rec[2:])
	if w <= 0 || n > uint64(len(rec)-2-w) {
		return errRecord
	}
	key := string(rec[2+w : 2+w+int(n)])
	value := rec[2+w+int(n):]
	if old, ok := j.live[ns][key]; ok {
		j.liveBytes -= int64(len(key) + len(old))
	}
	switch op {
	case opPut:
		j.live[ns][key] = append([]byte(nil), value...)
		j.liveBytes += int64(len(key) + len(value))
	case opDel:
		delete(j.live[ns], key)
	default:
		return errRecord
	}
	return nil
}

// write appends a record and applies it. It returns the file to sync.
// The keyring is loaded under the journal lock so that a record can never
// be sealed by a key that a re-encryption's compaction has already replaced.
func (j *metaJournal) write(keys *atomic.Pointer[keyring], op, ns byte, key string, value []byte) (*os.File, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	kr := keys.Load()
	rec := encodeRecord(op, ns, key, value)
	id := j.id()
	id.pos = j.size
	blk := kr.seal(nil, id, rec)
	if _, err := j.f.WriteAt(blk, j.size); err != nil {
		// Whatever part landed is cut at the next open or overwritten by the next write.
		return nil, err
	}
	j.size += int64(len(blk))
	j.keys[kr.current]++
	if err := j.apply(rec); err != nil {
		return nil, err
	}
	if j.size > compactMinBytes && j.size > 4*(j.liveBytes+int64(len(j.live[0])+len(j.live[1]))*64) {
		if err := j.compactLocked(kr); err != nil {
			return nil, err
		}
	}
	return j.f, nil
}

// compact rewrites the live map as a new generation sealed by kr's current
// key; re-encryption uses it to move the metadata to a new DEK.
func (j *metaJournal) compact(kr *keyring) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.compactLocked(kr)
}

func (j *metaJournal) compactLocked(kr *keyring) error {
	gen := j.gen + 1
	id := blockID{kind: kindMeta, base: gen}
	var b []byte
	n := 0
	for ns, m := range j.live {
		for k, v := range m {
			id.pos = int64(len(b))
			b = kr.seal(b, id, encodeRecord(opPut, byte(ns), k, v))
			n++
		}
	}
	// Through a side file and a rename: a half-written newest generation
	// would otherwise be taken for the journal, its missing records for a
	// torn tail.
	path := filepath.Join(j.dir, journalName(gen))
	if err := writeFileAtomic(path, b); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if err != nil {
		return err
	}
	old := j.f
	j.f, j.gen, j.size = f, gen, int64(len(b))
	j.keys = map[string]int{}
	if n > 0 {
		j.keys[kr.current] = n
	}
	old.Close()
	return os.Remove(filepath.Join(j.dir, journalName(gen-1)))
}

func (j *metaJournal) get(ns byte, key string) ([]byte, bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	v, ok := j.live[ns][key]
	return append([]byte(nil), v...), ok
}

func (j *metaJournal) list(ns byte, prefix string) map[string][]byte {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := map[string][]byte{}
	for k, v := range j.live[ns] {
		if strings.HasPrefix(k, prefix) {
			out[k] = append([]byte(nil), v...)
		}
	}
	return out
}

func (j *metaJournal) keyIDs() []string {
	j.mu.Lock()
	defer j.mu.Unlock()
	ids := []string{}
	for k := range j.keys {
		ids = append(ids, k)
	}
	return ids
}

func (j *metaJournal) sizeBytes() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.size
}

func (j *metaJournal) close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return durable.SyncClose(j.f)
}
