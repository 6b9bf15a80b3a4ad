package broker

import (
	"context"
	"crypto/sha256"
	"errors"
	"time"
)

// authTimeout bounds one call of the Authenticator.
const authTimeout = 30 * time.Second

// session is what a connection's login established. It is never changed in
// place: a new access level or a re-authentication replaces it whole, so a
// handler reading it concurrently sees one login or the other. The password
// stays here, in memory only, so that the login can be checked again.
type session struct {
	user      string
	password  string // the API key or, for OAUTHBEARER, the access token
	mechanism string
	access    Access // on the whole instance
	acl       *acl
	expires   time.Time // zero: never
	principal string
}

// access is what the connection may do now: nothing once its login is
// revoked or before it logs in.
func (c *conn) access() Access {
	if s := c.sess.Load(); s != nil {
		return s.access
	}
	return NoAccess
}

// Temporary marks an Authenticator error as "cannot check now" (IAM is
// unreachable) rather than "refused": a re-authorization sweep keeps the
// connections whose login it could not check, with the access they had,
// instead of cutting every client off during an outage. A new login is still
// refused with the error's message.
func Temporary(msg string) error { return temporaryError(msg) }

type temporaryError string

func (e temporaryError) Error() string { return string(e) }

func isTemporary(err error) bool {
	var t temporaryError
	return errors.As(err, &t)
}

// Reauthorize asks for an immediate re-authorization sweep (e.g. because
// credentials were revoked) without waiting for it.
func (b *Broker) Reauthorize() {
	select {
	case b.recheck <- struct{}{}:
	default: // a sweep is already pending; it will see the change
	}
}

// runReauthorization sweeps the connections every Reauthorize interval and
// whenever asked, until the broker closes.
func (b *Broker) runReauthorization() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-b.done:
			cancel() // a sweep waiting on the Authenticator gives up
		case <-ctx.Done():
		}
	}()
	b.every(b.cfg.Reauthorize, b.recheck, func() { b.reauthorize(ctx) })
}

// verdict is the Authenticator's answer for one login.
type verdict struct {
	login Login
	acl   *acl
	err   error
}

// reauthorize checks every logged-in connection's credentials again with the
// same Authenticator as at login: a connection whose login is refused now is
// closed, one whose access changed gets the new access for its next request.
// Connections sharing a login cost one check; the logins are told apart by
// a digest so the map holds no password.
func (b *Broker) reauthorize(ctx context.Context) {
	b.mu.Lock()
	conns := make([]*conn, 0, len(b.conns))
	for c := range b.conns {
		conns = append(conns, c)
	}
	b.mu.Unlock()
	verdicts := map[[sha256.Size]byte]verdict{}
	for _, c := range conns {
		s := c.sess.Load()
		if s == nil || ctx.Err() != nil {
			continue
		}
		id := sha256.Sum256([]byte(s.mechanism + "\x00" + s.user + "\x00" + s.password))
		v, ok := verdicts[id]
		if !ok {
			actx, cancel := context.WithTimeout(ctx, authTimeout)
			v.login, v.err = b.cfg.Login(actx, Credentials{Mechanism: s.mechanism, User: s.user, Secret: s.password})
			v.acl = compileACL(v.login)
			cancel()
			verdicts[id] = v
		}
		switch {
		case isTemporary(v.err):
			if !ok {
				b.log.Warn("kafka login could not be re-checked; connections keep their access", "user", s.user, "reason", v.err.Error())
			}
		case v.err != nil || !v.acl.allows(ClusterResource, "", Reader):
			if c.sess.CompareAndSwap(s, nil) {
				b.log.Info("kafka connection closed: its credentials no longer authenticate", "remote", c.nc.RemoteAddr().String(), "user", s.user)
				c.close()
			}
		case !v.acl.equal(s.acl):
			if c.sess.CompareAndSwap(s, &session{user: s.user, password: s.password, mechanism: s.mechanism, access: v.login.Access, acl: v.acl, expires: s.expires, principal: s.principal}) {
				b.log.Info("kafka connection access changed", "remote", c.nc.RemoteAddr().String(), "user", s.user, "from", s.access.String(), "to", v.login.Access.String(), "grants", len(v.login.Grants))
			}
		}
	}
}
