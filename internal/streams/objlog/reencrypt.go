package objlog

import (
	"context"
	"slices"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/seglog"
)

// Re-encryption under a new DEK (a root key rotation). The new DEK's
// verifier is recorded in objlog_keys before anything is sealed with it,
// so that the store opens with both keys (the new one first) until the
// end. New appends are sealed under it at once; then the metadata rows
// are sealed again under it (their names' HMACs re-derived with its name
// key), and every object whose objlog_objects row names another DEK is
// rewritten as compaction does, group by group, each group's rows moved
// in one transaction. What is left to do is always the objects and rows
// still under another key, so a re-encryption stopped anywhere (a
// cancel, a crash, another node taking over) resumes from there; its
// total is recorded (objlog_stores.reenc_total) so that progress
// continues where it was. At the end the store's verifier is the new
// key's, the old verifiers are deleted, and the old objects are deleted a
// request timeout after their last row moved away.

// rewriteHook, when a test sets it, is called at each stage of an object
// rewrite; an error stops it there, as a crash would.
var rewriteHook func(stage string) error

// reencGroupBytes bounds the objects rewritten into one (a test makes it
// small to stop a re-encryption between objects).
var reencGroupBytes int64 = compactTarget

// verifiers reads the store's key verifiers by key ID; ok is false for a
// store that does not exist yet.
func (s *Store) verifiers(tx *store.Tx) (map[string][]byte, bool, error) {
	var main []byte
	err := tx.QueryRow(`SELECT verifier FROM objlog_stores WHERE store = ?`, s.opts.StoreID).Scan(&main)
	if store.IsNoRows(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	out := map[string][]byte{sealedKeyID(main): main}
	rows, err := tx.Query(`SELECT key_id, verifier FROM objlog_keys WHERE store = ?`, s.opts.StoreID)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		var v []byte
		if err := rows.Scan(&id, &v); err != nil {
			return nil, false, err
		}
		out[id] = v
	}
	return out, true, rows.Err()
}

// opensVerifier reports whether k opens the verifier v.
func (s *Store) opensVerifier(k *dekKey, v []byte) bool {
	plain, err := k.open(nil, aad("verifier", s.opts.StoreID), v)
	return err == nil && string(plain) == verifierPlain
}

func (s *Store) keyMismatch(op string) error {
	return errs.E(op, errs.Unprocessable, CodeKeyMismatch, "The data encryption key does not match the key that sealed this store")
}

// verifyKey checks the DEKs against the store's verifiers, or records one
// for a new store, so that a wrong key is refused before anything is read:
// every key with a verifier must match it, at least one must have one, and
// the sealing key's verifier is recorded when it is new (a re-encryption
// about to start).
func (s *Store) verifyKey(ctx context.Context, op string) error {
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		vs, exists, err := s.verifiers(tx)
		if err != nil {
			return err
		}
		cur := s.keys.current()
		a := aad("verifier", s.opts.StoreID)
		if !exists {
			_, err = tx.Exec(`INSERT INTO objlog_stores (store, verifier) VALUES (?, ?)`, s.opts.StoreID, cur.seal(nil, a, []byte(verifierPlain)))
			return err
		}
		matched := false
		for _, k := range append(s.keys.others(), cur) {
			if v, ok := vs[k.id]; ok {
				if !s.opensVerifier(k, v) {
					return s.keyMismatch(op)
				}
				matched = true
			}
		}
		if !matched {
			return s.keyMismatch(op)
		}
		if _, ok := vs[cur.id]; !ok {
			_, err = tx.Exec(`INSERT INTO objlog_keys (store, key_id, verifier) VALUES (?, ?, ?)`, s.opts.StoreID, cur.id, cur.seal(nil, a, []byte(verifierPlain)))
		}
		return err
	})
	if err != nil && errs.As(err) == nil {
		return errs.Internalf(op, err)
	}
	return err
}

// ReencryptTo makes dek the store's sealing key and rewrites everything
// sealed under its other keys under it: metadata rows, then objects.
// progress (which may be nil) is told the bytes of objects rewritten of
// the bytes to rewrite, counted from the re-encryption's start even when
// it resumes one stopped earlier. When it returns nil, nothing of the
// store is sealed under another key and the store has only dek. Stopped
// (ctx, Close, a failure), it leaves every row readable with dek and the
// old keys; calling it again (after a reopen with both keys, dek first, on
// any node) resumes.
func (s *Store) ReencryptTo(ctx context.Context, dek *seglog.DEK, progress func(done, total int64)) error {
	const op = "objlog.ReencryptTo"
	if err := s.writable(op); err != nil {
		return err
	}
	if progress == nil {
		progress = func(int64, int64) {}
	}
	s.reencMu.Lock()
	defer s.reencMu.Unlock()
	k, err := s.switchKey(ctx, op, dek)
	if err != nil {
		return err
	}
	// Flushes sealed under the old key commit before the objects are listed.
	if err := s.fl.sealingWith(ctx, k); err != nil {
		return s.reencError(ctx, op, err)
	}
	total, err := s.reencTotal(ctx, op, k)
	if err != nil {
		return err
	}
	if err := s.resealMeta(ctx, op, k); err != nil {
		return s.reencError(ctx, op, err)
	}
	var last time.Time // when the last group's old objects were replaced
	for {
		objs, remaining, err := s.listObjects(ctx, `dek_id <> ?`, k.id)
		if err != nil {
			return s.reencError(ctx, op, err)
		}
		progress(max(0, total-remaining), total)
		if len(objs) == 0 {
			break
		}
		for len(objs) > 0 {
			var group []string
			var size int64
			group, size, objs = nextGroup(objs, reencGroupBytes)
			if err := ctx.Err(); err != nil {
				return s.reencError(ctx, op, err)
			}
			if err := s.usable(op); err != nil {
				return err
			}
			s.compactMu.Lock()
			err := s.rewriteGroup(ctx, op, group)
			s.compactMu.Unlock()
			if err != nil {
				return s.reencError(ctx, op, err)
			}
			last = time.Now()
			remaining -= size
			progress(max(0, total-remaining), total)
		}
	}
	// Reads that looked up the old objects before their rows moved may
	// still open them with the old key: it stays until they are done.
	if !last.IsZero() {
		select {
		case <-time.After(time.Until(last.Add(s.opts.RequestTimeout + 10*time.Millisecond))):
		case <-ctx.Done():
			return s.reencError(ctx, op, ctx.Err())
		}
	}
	if err := s.finishReencryption(ctx, op, k); err != nil {
		return err
	}
	// The old objects go now that no read can need them.
	s.compactMu.Lock()
	s.removeReplaced(context.WithoutCancel(ctx))
	s.compactMu.Unlock()
	progress(total, total)
	return nil
}

// reencError is a stopped re-encryption's error: Unavailable when ctx
// ended, else err as it is (or Internal).
func (s *Store) reencError(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return errs.E(op, errs.Unavailable, "CANCELED", "The re-encryption was stopped; it resumes when run again").Because(ctx.Err())
	}
	if errs.As(err) != nil {
		return err
	}
	return errs.Internalf(op, err)
}

// switchKey checks dek against its verifier, or records one, then makes it
// the sealing key (the key already in the keyring when it is there).
func (s *Store) switchKey(ctx context.Context, op string, dek *seglog.DEK) (*dekKey, error) {
	k, err := newDEKKey(dek)
	if err != nil {
		return nil, errs.E(op, errs.Invalid, "DEK_INVALID", "The data encryption key needs an ID of 1 to 255 bytes and 32 bytes of key")
	}
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		vs, _, err := s.verifiers(tx)
		if err != nil {
			return err
		}
		if v, ok := vs[k.id]; ok {
			if !s.opensVerifier(k, v) {
				return errs.E(op, errs.Unprocessable, CodeKeyMismatch, "The data encryption key does not match the key with its ID")
			}
			return nil
		}
		_, err = tx.Exec(`INSERT INTO objlog_keys (store, key_id, verifier) VALUES (?, ?, ?)`, s.opts.StoreID, k.id, k.seal(nil, aad("verifier", s.opts.StoreID), []byte(verifierPlain)))
		return err
	})
	if err != nil {
		return nil, s.reencError(ctx, op, err)
	}
	if known := s.keys.byID(k.id); known != nil {
		k = known
	}
	// Metadata writes see one sealing key from start to commit.
	s.metaMu.Lock()
	s.keys.sealWith(k, false)
	s.metaMu.Unlock()
	return k, nil
}

// reencTotal is the bytes of the re-encryption to k: recorded when it
// starts, read back when it resumes.
func (s *Store) reencTotal(ctx context.Context, op string, k *dekKey) (int64, error) {
	var total int64
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		var to string
		if err := tx.QueryRow(`SELECT reenc_to, reenc_total FROM objlog_stores WHERE store = ?`, s.opts.StoreID).Scan(&to, &total); err != nil {
			return err
		}
		if to == k.id {
			return nil
		}
		if err := tx.QueryRow(`SELECT COALESCE(SUM(size), 0) FROM objlog_objects WHERE store = ? AND dek_id <> ?`, s.opts.StoreID, k.id).Scan(&total); err != nil {
			return err
		}
		_, err := tx.Exec(`UPDATE objlog_stores SET reenc_to = ?, reenc_total = ? WHERE store = ?`, k.id, total, s.opts.StoreID)
		return err
	})
	if err != nil {
		return 0, s.reencError(ctx, op, err)
	}
	return total, nil
}

type sizedObject struct {
	name string
	size int64
}

// listObjects lists the store's objects that match cond (SQL with one
// argument, arg), oldest first, and their bytes.
func (s *Store) listObjects(ctx context.Context, cond string, arg any) ([]sizedObject, int64, error) {
	var objs []sizedObject
	var bytes int64
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		objs, bytes = objs[:0], 0
		rows, err := tx.Query(`SELECT name, size FROM objlog_objects WHERE store = ? AND `+cond+` ORDER BY created_at, name`, s.opts.StoreID, arg)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var o sizedObject
			if err := rows.Scan(&o.name, &o.size); err != nil {
				return err
			}
			objs, bytes = append(objs, o), bytes+o.size
		}
		return rows.Err()
	})
	return objs, bytes, err
}

// metaRowsPerTx bounds the metadata rows re-sealed per transaction.
const metaRowsPerTx = 256

// resealMeta seals every metadata row under another key again under k,
// its name's HMAC re-derived with k's name key; each row's old and new
// forms swap in one transaction.
func (s *Store) resealMeta(ctx context.Context, op string, k *dekKey) error {
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	type row struct{ h, sealed []byte }
	var todo []row
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		todo = todo[:0]
		rows, err := tx.Query(`SELECT name_hash, sealed FROM objlog_meta WHERE store = ?`, s.opts.StoreID)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var r row
			if err := rows.Scan(&r.h, &r.sealed); err != nil {
				return err
			}
			if sealedKeyID(r.sealed) != k.id {
				todo = append(todo, r)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return err
	}
	for len(todo) > 0 {
		n := min(len(todo), metaRowsPerTx)
		err := s.db.Tx(ctx, func(tx *store.Tx) error {
			for _, r := range todo[:n] {
				name, value, _, err := openMeta(s.keys, s.opts.StoreID, r.h, r.sealed)
				if err != nil {
					return errs.E(op, errs.Unprocessable, CodeCorrupt, "Stored metadata is damaged or was sealed with another key").Because(err)
				}
				if _, err := tx.Exec(`DELETE FROM objlog_meta WHERE store = ? AND name_hash = ?`, s.opts.StoreID, r.h); err != nil {
					return err
				}
				err = s.putMetaRow(tx, k, name, value)
				clear(value)
				if err != nil {
					return err
				}
				s.announce(tx, name) // followers' views re-read it under the new key
			}
			return nil
		})
		if err != nil {
			return err
		}
		todo = todo[n:]
	}
	return nil
}

// finishReencryption checks that nothing is left under another key than
// k, makes k's verifier the store's only one and k its only key.
func (s *Store) finishReencryption(ctx context.Context, op string, k *dekKey) error {
	s.metaMu.Lock()
	defer s.metaMu.Unlock()
	err := s.db.Tx(ctx, func(tx *store.Tx) error {
		var n int
		if err := tx.QueryRow(`SELECT COUNT(*) FROM objlog_objects WHERE store = ? AND dek_id <> ?`, s.opts.StoreID, k.id).Scan(&n); err != nil {
			return err
		}
		ids, err := metaKeyIDs(tx, s.opts.StoreID)
		if err != nil {
			return err
		}
		if n > 0 || slices.ContainsFunc(ids, func(id string) bool { return id != k.id }) {
			return errs.E(op, errs.Internal, "REENCRYPT_INCOMPLETE", "Data under an old key remains after re-encryption")
		}
		a := aad("verifier", s.opts.StoreID)
		if _, err := tx.Exec(`UPDATE objlog_stores SET verifier = ?, reenc_to = '', reenc_total = 0 WHERE store = ?`,
			k.seal(nil, a, []byte(verifierPlain)), s.opts.StoreID); err != nil {
			return err
		}
		_, err = tx.Exec(`DELETE FROM objlog_keys WHERE store = ?`, s.opts.StoreID)
		return err
	})
	if err != nil {
		return s.reencError(ctx, op, err)
	}
	s.keys.sealWith(k, true)
	return nil
}

// metaKeyIDs lists the IDs of the keys that sealed the store's metadata.
func metaKeyIDs(tx *store.Tx, storeID string) ([]string, error) {
	rows, err := tx.Query(`SELECT sealed FROM objlog_meta WHERE store = ?`, storeID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var sealed []byte
		if err := rows.Scan(&sealed); err != nil {
			return nil, err
		}
		if id := sealedKeyID(sealed); !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids, rows.Err()
}

// KeyIDsInUse lists the IDs of the DEKs that sealed anything in the store
// (objects, metadata, verifiers), and the one that seals new data. If the
// database cannot be read, it lists every key the store has.
func (s *Store) KeyIDsInUse() []string {
	set := map[string]bool{s.keys.current().id: true}
	err := s.db.Read(context.Background(), func(tx *store.Tx) error {
		rows, err := tx.Query(`SELECT DISTINCT dek_id FROM objlog_objects WHERE store = ?`, s.opts.StoreID)
		if err != nil {
			return err
		}
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			set[id] = true
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		ids, err := metaKeyIDs(tx, s.opts.StoreID)
		if err != nil {
			return err
		}
		vs, _, err := s.verifiers(tx)
		for id := range vs {
			ids = append(ids, id)
		}
		for _, id := range ids {
			set[id] = true
		}
		return err
	})
	if err != nil {
		for _, k := range s.keys.others() {
			set[k.id] = true
		}
	}
	out := make([]string, 0, len(set))
	for id := range set {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
