package kms

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// hotCache keeps what wrap and unwrap need in memory: instances, and each
// used key's state with one ready cipher per version, so the hot path neither
// queries the database nor opens the master seal. Every committed write to
// keys empties it (writes are rare next to wraps); a load that raced with a
// write is not cached (generation check).
type hotCache struct {
	mu        sync.RWMutex
	gen       uint64
	instances map[string]Instance
	keys      map[hotRef]*hotKey
}

// hotRef names a cached key as the call named it: a struct rather than
// the two strings joined, which would allocate on every wrap.
type hotRef struct{ instance, idOrAlias string }

type hotKey struct {
	id, name, crn, ring string
	state               int
	extractable         bool
	expiration          time.Time
	latest              *versionCipher
	versions            map[uuid.UUID]*versionCipher
	// The instance GUID, ring and id as interface values for the audit
	// events of wrap and unwrap (recordCrypto), boxed once.
	auditInstance, auditRing, auditID any
}

func newHotCache() *hotCache {
	return &hotCache{instances: map[string]Instance{}, keys: map[hotRef]*hotKey{}}
}

func (h *hotCache) invalidate() {
	h.mu.Lock()
	h.gen++
	clear(h.instances)
	clear(h.keys)
	h.mu.Unlock()
}

// invalidateOnCommit empties the cache once tx commits, and through the
// change feed the caches of the other nodes sharing the database.
func (h *hotCache) invalidateOnCommit(tx *store.Tx) {
	tx.OnCommit(h.invalidate)
	tx.Changed(topicKeys, "")
}

func (h *hotCache) instance(guid string) (Instance, bool) {
	h.mu.RLock()
	in, ok := h.instances[guid]
	h.mu.RUnlock()
	return in, ok
}

func (h *hotCache) putInstance(gen uint64, in Instance) {
	h.mu.Lock()
	if h.gen == gen {
		h.instances[in.GUID] = in
	}
	h.mu.Unlock()
}

func (h *hotCache) generation() uint64 {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.gen
}

func (h *hotCache) key(ref hotRef) *hotKey {
	h.mu.RLock()
	k := h.keys[ref]
	h.mu.RUnlock()
	return k
}

func (h *hotCache) putKey(gen uint64, ref hotRef, k *hotKey) {
	h.mu.Lock()
	if h.gen == gen {
		h.keys[ref] = k
	}
	h.mu.Unlock()
}

// effectiveState is the hot key's state at now (expiration applied).
func (k *hotKey) effectiveState(now time.Time) int {
	if (k.state == StateActive || k.state == StateSuspended) && !k.expiration.IsZero() && !now.Before(k.expiration) {
		return StateDeactivated
	}
	return k.state
}

// hotKey returns the cached key for idOrAlias, loading it (and opening its
// versions under the master key) on a miss.
func (s *Service) hotKey(ctx context.Context, in Instance, idOrAlias string) (*hotKey, error) {
	guid := in.GUID
	ref := hotRef{guid, idOrAlias}
	if k := s.hot.key(ref); k != nil && s.trusted() {
		return k, nil
	}
	gen := s.hot.generation()
	var hk *hotKey
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		id, err := resolveID(tx, guid, idOrAlias)
		if err != nil {
			return err
		}
		k, err := loadKey(tx, guid, id)
		if err != nil {
			return err
		}
		hk = &hotKey{id: k.ID, name: k.Name, crn: keyCRN(in, k.ID), ring: k.KeyRing, state: k.State, extractable: k.Extractable,
			expiration: store.ParseTime(k.Expiration), versions: map[uuid.UUID]*versionCipher{},
			auditInstance: guid, auditRing: k.KeyRing, auditID: k.ID}
		if k.Extractable || k.State == StateDestroyed {
			return nil // never used to wrap: no need to open the material
		}
		rows, err := tx.Query(`SELECT id, material, creation_date FROM kms_key_versions WHERE key_id = ?`, k.ID)
		if err != nil {
			return errs.Internalf("kms.hotKey", err)
		}
		defer rows.Close()
		for rows.Next() {
			var vid, created string
			var sealed []byte
			if err := rows.Scan(&vid, &sealed, &created); err != nil {
				return errs.Internalf("kms.hotKey", err)
			}
			m, err := s.openVersion(k.ID, vid, sealed)
			if err != nil {
				return err
			}
			vc, err := newVersionCipher(k.ID, vid, created, m)
			seal.Wipe(m)
			if err != nil {
				return errs.Internalf("kms.hotKey", err)
			}
			hk.versions[vc.id] = vc
			if vid == k.LatestVersion {
				hk.latest = vc
			}
		}
		if err := rows.Err(); err != nil {
			return errs.Internalf("kms.hotKey", err)
		}
		if hk.latest == nil {
			return errs.E("kms.hotKey", errs.Internal, "INCOMPLETE_METADATA_ERR", "Key metadata became corrupted")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.hot.putKey(gen, ref, hk)
	return hk, nil
}
