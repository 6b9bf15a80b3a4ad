package console

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

// Sessions kept in the database, so that whichever node of a cluster a
// browser's request reaches knows its session, and signing out on one
// node ends it on all. The row is found by the SHA-256 of the cookie's
// random id (a copy of the database gives no cookie to replay) and the
// bearer token, CSRF token and principal are sealed under the master key,
// bound to that hash.

var sessionMigrations = []store.Migration{{ID: "console/0001", SQL: `
CREATE TABLE console_sessions (
	id_hash   BLOB PRIMARY KEY,
	sealed    BLOB NOT NULL,
	expires   TEXT NOT NULL,
	last_seen TEXT NOT NULL,
	flash     TEXT NOT NULL DEFAULT ''
)`}}

// lastSeenEvery is how stale a session's last use may be recorded: a
// browser's every page would otherwise be a database write. The idle
// timeout is kept to within this.
const lastSeenEvery = time.Minute

// sealedSession is what the sealed column holds.
type sealedSession struct {
	CSRF      string         `json:"csrf"`
	Token     string         `json:"token"`
	Principal auth.Principal `json:"principal"`
}

func sessionHash(id string) []byte {
	sum := sha256.Sum256([]byte(id))
	return sum[:]
}

// SessionAAD is what a kept session's sealed value is bound to, given the
// row's id_hash.
func SessionAAD(hash []byte) []byte {
	return []byte("keyline/console/session/" + hex.EncodeToString(hash))
}

// kept says whether sessions live in the database.
func (s *sessions) kept() bool { return s.db != nil }

func (s *sessions) createKept(sess *session) {
	hash := sessionHash(sess.id)
	plain, _ := json.Marshal(sealedSession{CSRF: sess.csrf, Token: sess.token, Principal: sess.principal})
	defer seal.Wipe(plain)
	sealed := s.sealer.Seal(plain, SessionAAD(hash))
	now := sess.lastSeen
	err := s.db.Tx(context.Background(), func(tx *store.Tx) error {
		// Ended sessions go as new ones come.
		if _, err := tx.Exec(`DELETE FROM console_sessions WHERE expires <= ? OR last_seen <= ?`,
			store.Time(now), store.Time(now.Add(-maxSessionIdle))); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO console_sessions (id_hash, sealed, expires, last_seen) VALUES (?, ?, ?, ?)`,
			hash, sealed, store.Time(sess.expires), store.Time(now))
		return err
	})
	if err != nil {
		// The browser gets a cookie no node knows: it is sent to sign in.
		s.logger.Error("console: storing a session", "err", err)
	}
}

func (s *sessions) getKept(r *http.Request, id string) *session {
	ctx := r.Context()
	hash := sessionHash(id)
	var sealed []byte
	var expires, lastSeen string
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT sealed, expires, last_seen FROM console_sessions WHERE id_hash = ?`, hash).Scan(&sealed, &expires, &lastSeen)
	})
	if err != nil {
		if !store.IsNoRows(err) {
			s.logger.Error("console: reading a session", "err", err)
		}
		return nil
	}
	plain, err := s.sealer.Open(sealed, SessionAAD(hash))
	if err != nil {
		s.logger.Error("console: a stored session cannot be opened")
		return nil
	}
	defer seal.Wipe(plain)
	var ss sealedSession
	if err := json.Unmarshal(plain, &ss); err != nil {
		return nil
	}
	now := s.clock.Now()
	sess := &session{id: id, csrf: ss.CSRF, token: ss.Token, principal: ss.Principal,
		expires: store.ParseTime(expires), lastSeen: store.ParseTime(lastSeen)}
	if !sess.live(now) {
		s.deleteKept(id)
		return nil
	}
	if now.Sub(sess.lastSeen) >= lastSeenEvery {
		sess.lastSeen = now
		s.updateKept(id, `UPDATE console_sessions SET last_seen = ? WHERE id_hash = ?`, store.Time(now), hash)
	}
	return sess
}

func (s *sessions) deleteKept(id string) {
	s.updateKept(id, `DELETE FROM console_sessions WHERE id_hash = ?`, sessionHash(id))
}

func (s *sessions) updateKept(id, query string, args ...any) {
	err := s.db.Tx(context.Background(), func(tx *store.Tx) error {
		_, err := tx.Exec(query, args...)
		return err
	})
	if err != nil {
		s.logger.Error("console: updating a session", "err", err)
	}
}

func (s *sessions) setFlashKept(sess *session, msg string) {
	s.updateKept(sess.id, `UPDATE console_sessions SET flash = ? WHERE id_hash = ?`, msg, sessionHash(sess.id))
}

func (s *sessions) takeFlashKept(sess *session) string {
	var msg string
	hash := sessionHash(sess.id)
	err := s.db.Tx(context.Background(), func(tx *store.Tx) error {
		if err := tx.QueryRow(`SELECT flash FROM console_sessions WHERE id_hash = ?`, hash).Scan(&msg); err != nil || msg == "" {
			return err
		}
		_, err := tx.Exec(`UPDATE console_sessions SET flash = '' WHERE id_hash = ?`, hash)
		return err
	})
	if err != nil && !store.IsNoRows(err) {
		s.logger.Error("console: reading a session's message", "err", err)
	}
	return msg
}

// DropSessionsSealedBefore deletes, in tx, the kept sessions whose sealed
// value current does not accept: a master key rotation calls it before it
// drops the older key, so that no session (a bearer token among what it
// seals) stays readable by that key; their users sign in again.
func DropSessionsSealedBefore(tx *store.Tx, current func(sealed, aad []byte) bool) (int, error) {
	rows, err := tx.Query(`SELECT id_hash, sealed FROM console_sessions`)
	if err != nil {
		return 0, err
	}
	var stale [][]byte
	for rows.Next() {
		var hash, sealed []byte
		if err := rows.Scan(&hash, &sealed); err != nil {
			rows.Close()
			return 0, err
		}
		if !current(sealed, SessionAAD(hash)) {
			stale = append(stale, hash)
		}
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, err
	}
	for _, hash := range stale {
		if _, err := tx.Exec(`DELETE FROM console_sessions WHERE id_hash = ?`, hash); err != nil {
			return 0, err
		}
	}
	return len(stale), nil
}
