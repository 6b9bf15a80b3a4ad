package iam

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"time"

	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// signer holds the RS256 key tokens are signed with.
type signer struct {
	kid     string
	priv    *rsa.PrivateKey
	created time.Time
}

// signingKeys are the token signing keys kept in the database, sealed under
// the master key: every node of a cluster loads them all, signs with the
// newest and accepts tokens signed with any of them.
type signingKeys struct {
	current *signer
	public  map[string]*rsa.PublicKey
	kids    []string // newest first
}

func signingKeyAAD(kid string) []byte { return []byte("keyline/iam/signing-key/" + kid) }

// unknownKidReload is how often a token naming a key this node has not
// loaded may make it read the keys again (another node rotated; the change
// feed normally says so first).
const unknownKidReload = time.Second

// SigningKeyOverlap is how long a replaced signing key still verifies
// tokens: the longest a token it signed lives.
const SigningKeyOverlap = RefreshTokenTTL

// SigningKeyLifetime is how long a key signs new tokens before the node
// that next signs one replaces it (once, whichever nodes notice together).
const SigningKeyLifetime = 90 * 24 * time.Hour

// loadSigningKeys reads the sealed signing keys, creating the first on the
// first start. Only the master key opens them, so a copy of the database
// cannot mint tokens.
func (s *Service) loadSigningKeys(ctx context.Context) error {
	keys, err := s.readSigningKeys(ctx)
	if err != nil {
		return err
	}
	if keys == nil {
		if _, err := s.addSigningKey(ctx, time.Time{}); err != nil {
			return err
		}
		if keys, err = s.readSigningKeys(ctx); err != nil {
			return err
		}
	}
	s.signing.Store(keys)
	return nil
}

// readSigningKeys opens every stored signing key; nil when there is none.
func (s *Service) readSigningKeys(ctx context.Context) (*signingKeys, error) {
	const op = "iam.loadSigningKeys"
	type row struct {
		kid, created string
		sealed       []byte
	}
	var rows []row
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		rs, err := tx.Query(`SELECT kid, sealed, created_at FROM iam_signing_keys ORDER BY created_at DESC, kid DESC`)
		if err != nil {
			return err
		}
		defer rs.Close()
		for rs.Next() {
			var r row
			if err := rs.Scan(&r.kid, &r.sealed, &r.created); err != nil {
				return err
			}
			rows = append(rows, r)
		}
		return rs.Err()
	})
	if err != nil {
		return nil, errs.Internalf(op, err)
	}
	if len(rows) == 0 {
		return nil, nil
	}
	keys := &signingKeys{public: map[string]*rsa.PublicKey{}}
	for i, r := range rows {
		priv, err := s.openSigningKey(r.kid, r.sealed)
		if err != nil {
			return nil, err
		}
		if i == 0 {
			keys.current = &signer{kid: r.kid, priv: priv, created: store.ParseTime(r.created)}
		}
		keys.public[r.kid] = &priv.PublicKey
		keys.kids = append(keys.kids, r.kid)
	}
	return keys, nil
}

func (s *Service) openSigningKey(kid string, sealed []byte) (*rsa.PrivateKey, error) {
	const op = "iam.loadSigningKeys"
	der, err := s.master.Open(sealed, signingKeyAAD(kid))
	if err != nil {
		return nil, errs.E(op, errs.Internal, "SIGNING_KEY_ERR", "The token signing key cannot be opened with this master key").Because(err)
	}
	defer seal.Wipe(der)
	key, err := x509.ParsePKCS8PrivateKey(der)
	priv, ok := key.(*rsa.PrivateKey)
	if err != nil || !ok {
		return nil, errs.E(op, errs.Internal, "SIGNING_KEY_ERR", "The stored token signing key is not an RSA key")
	}
	return priv, nil
}

// addSigningKey generates a signing key and stores it sealed, unless the
// newest stored key was created at or after replaceBefore (the zero time:
// unless there is a key at all). Writers are serial across nodes, so nodes
// starting together on a new database, or noticing together that the key
// is due, add one key. Keys replaced more than SigningKeyOverlap ago are
// removed. It returns "" when it added none.
func (s *Service) addSigningKey(ctx context.Context, replaceBefore time.Time) (string, error) {
	const op = "iam.addSigningKey"
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return "", errs.Internalf(op, err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		return "", errs.Internalf(op, err)
	}
	sum := sha256.Sum256(pub)
	now := s.clock.Now()
	kid := now.Format("20060102") + "-" + hex.EncodeToString(sum[:8])
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return "", errs.Internalf(op, err)
	}
	defer seal.Wipe(der)
	sealed := s.master.Seal(der, signingKeyAAD(kid))
	err = s.db.Tx(ctx, func(tx *store.Tx) error {
		// Keys older than the newest were replaced when it was created:
		// once that is SigningKeyOverlap ago, no token they signed lives.
		var newest string
		err := tx.QueryRow(`SELECT created_at FROM iam_signing_keys ORDER BY created_at DESC LIMIT 1`).Scan(&newest)
		if err == nil && !store.ParseTime(newest).Before(replaceBefore) {
			kid = "" // a fresh enough key exists
			return nil
		}
		if err == nil && newest < store.Time(now.Add(-SigningKeyOverlap)) {
			if _, err := tx.Exec(`DELETE FROM iam_signing_keys WHERE created_at < ?`, newest); err != nil {
				return err
			}
		} else if err != nil && !store.IsNoRows(err) {
			return err
		}
		// created_at orders the keys (the newest signs): strictly after
		// the newest, whatever the clock says.
		created := now
		if newest != "" && !created.After(store.ParseTime(newest)) {
			created = store.ParseTime(newest).Add(time.Nanosecond)
		}
		if _, err := tx.Exec(`INSERT INTO iam_signing_keys (kid, sealed, created_at) VALUES (?, ?, ?)`, kid, sealed, store.Time(created)); err != nil {
			return err
		}
		tx.Changed(topicSigningKeys, kid)
		return nil
	})
	if err != nil {
		return "", errs.Internalf(op, err)
	}
	return kid, nil
}

// RotateSigningKey makes a new token signing key the one new tokens are
// signed with, on every node; tokens signed with the previous key stay
// valid until they expire.
func (s *Service) RotateSigningKey(ctx context.Context) (string, error) {
	kid, err := s.addSigningKey(ctx, farFuture)
	if err != nil {
		return "", err
	}
	return kid, s.loadSigningKeys(ctx)
}

var farFuture = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// currentSigner is the key new tokens are signed with. When it is older
// than SigningKeyLifetime, the first caller to notice replaces it (a key
// generation, once in 90 days) while others still sign with it; no
// goroutine outlives the call.
func (s *Service) currentSigner() *signer {
	cur := s.signing.Load().current
	now := s.clock.Now()
	if now.Sub(cur.created) <= SigningKeyLifetime || !s.rotating.CompareAndSwap(false, true) {
		return cur
	}
	defer s.rotating.Store(false)
	ctx := context.Background()
	if _, err := s.addSigningKey(ctx, now.Add(-SigningKeyLifetime)); err != nil {
		s.logger.Error("iam: replacing the token signing key", "err", err)
		return cur
	}
	if err := s.loadSigningKeys(ctx); err != nil {
		s.logger.Error("iam: reloading the token signing keys", "err", err)
		return cur
	}
	return s.signing.Load().current
}

// verifyingKey is the public key kid names, reading the keys again (at
// most once per unknownKidReload) when it is not loaded.
func (s *Service) verifyingKey(kid string) *rsa.PublicKey {
	if pub := s.signing.Load().public[kid]; pub != nil || kid == "" {
		return pub
	}
	last := s.keysReadAt.Load()
	if time.Since(time.Unix(0, last)) < unknownKidReload || !s.keysReadAt.CompareAndSwap(last, time.Now().UnixNano()) {
		return nil
	}
	if keys, err := s.readSigningKeys(context.Background()); err == nil && keys != nil {
		s.signing.Store(keys)
	}
	return s.signing.Load().public[kid]
}
