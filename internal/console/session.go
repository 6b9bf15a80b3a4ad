package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

const (
	sessionCookie = "keyline_session"
	signinCookie  = "keyline_signin" // double-submit token of the sign-in form, before any session exists
	csrfField     = "csrf_token"
	// maxSessionIdle ends a session nobody used for this long, even if its
	// token is still valid.
	maxSessionIdle = 30 * time.Minute
)

// session is a signed-in browser. It lives in the database, sealed
// (sessiondb.go), or without one in this process's memory: the bearer token
// never leaves the server, the browser holds only the random session id.
type session struct {
	id        string
	csrf      string
	token     string
	principal auth.Principal
	expires   time.Time // the token's expiry: the session cannot outlive it
	lastSeen  time.Time
	flash     string // one message shown on the next page ("Key rotated")
}

// sessions is the session store, keyed by random id: in the database when
// db is set, else in memory.
type sessions struct {
	clock  clock.Clock
	mu     sync.Mutex
	byID   map[string]*session
	db     *store.DB
	sealer *seal.AEAD
	logger *slog.Logger
}

func newSessions(clk clock.Clock) *sessions {
	return &sessions{clock: clk, byID: map[string]*session{}}
}

// randomToken is 256 bits from crypto/rand, URL-safe.
func randomToken() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic("console: crypto/rand failed: " + err.Error()) // the OS has no entropy: nothing is safe
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func (s *sessions) create(p auth.Principal, token string, expires time.Time) *session {
	now := s.clock.Now()
	sess := &session{id: randomToken(), csrf: randomToken(), token: token, principal: p, expires: expires, lastSeen: now}
	if s.kept() {
		s.createKept(sess)
		return sess
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for id, old := range s.byID {
		if !old.live(now) {
			delete(s.byID, id)
		}
	}
	s.byID[sess.id] = sess
	return sess
}

func (s *session) live(now time.Time) bool {
	return now.Before(s.expires) && now.Sub(s.lastSeen) < maxSessionIdle
}

// get returns the live session of the request's cookie, or nil.
func (s *sessions) get(r *http.Request) *session {
	c, err := r.Cookie(sessionCookie)
	if err != nil || c.Value == "" {
		return nil
	}
	if s.kept() {
		return s.getKept(r, c.Value)
	}
	now := s.clock.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	sess := s.byID[c.Value]
	if sess == nil {
		return nil
	}
	if !sess.live(now) {
		delete(s.byID, sess.id)
		return nil
	}
	sess.lastSeen = now
	return sess
}

func (s *sessions) delete(id string) {
	if s.kept() {
		s.deleteKept(id)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, id)
}

// setFlash and takeFlash carry one message across a redirect.
func (s *sessions) setFlash(sess *session, msg string) {
	if s.kept() {
		s.setFlashKept(sess, msg)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sess.flash = msg
}

func (s *sessions) takeFlash(sess *session) string {
	if s.kept() {
		return s.takeFlashKept(sess)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	msg := sess.flash
	sess.flash = ""
	return msg
}

// validCSRF compares the form's token with the session's in constant time.
func validCSRF(want, got string) bool {
	return want != "" && subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}

// cookie is a console cookie; maxAge is relative, so the browser's clock
// need not agree with the server's. An empty value deletes the cookie.
func (c *Console) cookie(name, value string, maxAge time.Duration) *http.Cookie {
	ck := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: c.cfg.Secure, SameSite: http.SameSiteStrictMode}
	switch {
	case value == "":
		ck.MaxAge = -1
	case maxAge > 0:
		ck.MaxAge = int(maxAge / time.Second)
	}
	return ck
}
