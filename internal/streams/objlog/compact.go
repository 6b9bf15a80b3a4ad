package objlog

import (
	"context"
	"sort"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Compaction rewrites the chunks of small objects into one larger object,
// under the same DEK: fewer objects to list, GET and delete. Each chunk is
// opened and sealed again, since its additional data names its object and
// place. The rows move to the new object in one transaction; the old
// objects are deleted a request timeout later, once reads that looked them
// up before the swap are done (or by the next Open's sweep).

const (
	defaultCompactBelow = 1 << 20 // objects smaller than this are compacted
	compactTarget       = 8 << 20 // into objects of about this size
)

// Compact rewrites the store's objects smaller than below (0: 1 MiB) into
// larger ones and returns how many it replaced.
func (s *Store) Compact(ctx context.Context, below int64) (int, error) {
	const op = "objlog.Compact"
	if err := s.writable(op); err != nil {
		return 0, err
	}
	if below <= 0 {
		below = defaultCompactBelow
	}
	s.compactMu.Lock()
	defer s.compactMu.Unlock()
	s.removeReplaced(ctx)
	objs, _, err := s.listObjects(ctx, `size < ?`, below)
	if err != nil {
		return 0, errs.Internalf(op, err)
	}
	replaced := 0
	for len(objs) > 1 {
		var group []string
		group, _, objs = nextGroup(objs, compactTarget)
		if len(group) < 2 {
			continue
		}
		if err := s.rewriteGroup(ctx, op, group); err != nil {
			return replaced, err
		}
		replaced += len(group)
	}
	return replaced, nil
}

// nextGroup takes the first objects of objs, at least one, while their
// sizes add up to at most limit.
func nextGroup(objs []sizedObject, limit int64) (group []string, size int64, rest []sizedObject) {
	for len(objs) > 0 && (len(group) == 0 || size+objs[0].size <= limit) {
		group, size = append(group, objs[0].name), size+objs[0].size
		objs = objs[1:]
	}
	return group, size, objs
}

// moved is a batch row being rewritten into the new object.
type moved struct {
	p     *Partition
	e     entry // where it was
	pos   int64 // where it goes
	chunk []byte
}

// rewriteGroup rewrites the chunks of the objects of group into one new
// object under the sealing key (compaction, re-encryption), moves their
// rows to it in one transaction, and leaves the old objects to be deleted
// once no read may still use them.
func (s *Store) rewriteGroup(ctx context.Context, op string, group []string) error {
	key := s.keys.current()
	s.mu.RLock()
	byPID := map[int64]*Partition{}
	for _, p := range s.parts {
		byPID[p.pid] = p
	}
	s.mu.RUnlock()
	var ms []*moved
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		q := `SELECT pid, base_offset, last_offset, max_ts, size, object, pos, len FROM objlog_batches WHERE object IN (?` +
			strings.Repeat(", ?", len(group)-1) + `) ORDER BY pid, base_offset`
		args := make([]any, len(group))
		for i, g := range group {
			args[i] = g
		}
		rows, err := tx.Query(q, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var pid, last int64
			var e entry
			if err := rows.Scan(&pid, &e.base, &last, &e.maxTS, &e.size, &e.object, &e.pos, &e.sealed); err != nil {
				return err
			}
			e.records = int32(last - e.base + 1)
			if p := byPID[pid]; p != nil {
				ms = append(ms, &moved{p: p, e: e})
			}
		}
		return rows.Err()
	})
	if err != nil {
		return errs.Internalf(op, err)
	}
	es := make([]entry, len(ms))
	for i, m := range ms {
		es[i] = m.e
	}
	sealed, err := s.chunks(ctx, es)
	if err != nil {
		return err
	}
	name := s.prefix + randomName()
	var pos int64
	chunks := make([][]byte, len(ms))
	for i, m := range ms {
		plain, err := s.keys.open(nil, s.chunkAAD(m.e.object, m.e.pos), sealed[i])
		if err != nil {
			return errs.E(op, errs.Unprocessable, CodeCorrupt, "Stored data is damaged or was sealed with another key").Because(err)
		}
		m.pos = pos
		m.chunk = key.seal(nil, s.chunkAAD(name, pos), plain)
		clear(plain)
		chunks[i] = m.chunk
		pos += int64(len(m.chunk))
	}
	pctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	if err := s.bucket.put(pctx, name, chunks, pos); err != nil {
		return err
	}
	if rewriteHook != nil {
		if err := rewriteHook("uploaded"); err != nil {
			return err // as a crash would: the object is left for the sweep
		}
	}
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		if _, err := tx.Exec(`INSERT INTO objlog_objects (name, store, dek_id, size, created_at) VALUES (?, ?, ?, ?, ?)`,
			name, s.opts.StoreID, key.id, pos, store.Time(time.Now())); err != nil {
			return err
		}
		for _, m := range ms {
			// A row retention deleted meanwhile stays deleted.
			if _, err := tx.Exec(`UPDATE objlog_batches SET object = ?, pos = ?, len = ? WHERE pid = ? AND base_offset = ? AND object = ?`,
				name, m.pos, len(m.chunk), m.p.pid, m.e.base, m.e.object); err != nil {
				return err
			}
		}
		for _, g := range group {
			if _, err := tx.Exec(`DELETE FROM objlog_objects WHERE name = ?`, g); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		rctx, rcancel := context.WithTimeout(context.Background(), s.opts.RequestTimeout)
		s.bucket.remove(rctx, []string{name})
		rcancel()
		return errs.Internalf(op, err)
	}
	for _, m := range ms {
		s.cache.put(chunkKey{name, m.pos}, m.chunk)
		m.p.mu.Lock()
		i := sort.Search(len(m.p.index), func(i int) bool { return m.p.index[i].base >= m.e.base })
		if i < len(m.p.index) && m.p.index[i].base == m.e.base && m.p.index[i].object == m.e.object {
			m.p.index[i].object, m.p.index[i].pos, m.p.index[i].sealed = name, m.pos, int32(len(m.chunk))
		}
		m.p.mu.Unlock()
	}
	s.replacedMu.Lock()
	s.replaced = append(s.replaced, replacedObjects{names: group, at: time.Now()})
	s.replacedMu.Unlock()
	return nil
}

type replacedObjects struct {
	names []string
	at    time.Time
}

// removeReplaced deletes the objects compaction replaced more than a
// request timeout ago.
func (s *Store) removeReplaced(ctx context.Context) {
	s.replacedMu.Lock()
	var due []string
	keep := s.replaced[:0]
	for _, r := range s.replaced {
		if time.Since(r.at) > s.opts.RequestTimeout {
			due = append(due, r.names...)
		} else {
			keep = append(keep, r)
		}
	}
	s.replaced = keep
	s.replacedMu.Unlock()
	for _, n := range due {
		s.cache.dropObject(n)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	s.bucket.remove(ctx, due) // the sweep removes what fails
}

// compactLoop compacts every interval until the store closes.
func (s *Store) compactLoop(every time.Duration) {
	defer close(s.compactDone)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.compactStop:
			return
		case <-t.C:
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-s.compactStop:
				case <-ctx.Done():
				}
				cancel()
			}()
			s.Compact(ctx, 0)
			cancel()
		}
	}
}
