package streams

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
	"github.com/keyline/keyline/internal/streams/broker"
)

// ParamIAMTokenOnly makes a deployment accept IAM access tokens only
// (SASL OAUTHBEARER): PLAIN logins with an API key are refused. It is a
// provision parameter and can be changed on a live instance.
const ParamIAMTokenOnly = "iam_token_only"

var loginMigration = store.Migration{ID: "streams/login-settings", SQL: `
CREATE TABLE streams_login_settings (
	guid            TEXT PRIMARY KEY,
	iam_token_only  INTEGER NOT NULL
);`}

// iamTokenOnly reads ParamIAMTokenOnly from parameters: false when absent.
func iamTokenOnly(params map[string]any) (bool, error) {
	switch v := params[ParamIAMTokenOnly].(type) {
	case nil:
		return false, nil
	case bool:
		return v, nil
	}
	return false, errs.Ef("streams.Parameters", errs.Invalid, "INVALID_IAM_TOKEN_ONLY", "%s must be true (accept IAM access tokens over SASL OAUTHBEARER only) or false (also API keys over SASL PLAIN)",
		ParamIAMTokenOnly).On("field", ParamIAMTokenOnly)
}

func setIAMTokenOnlyTx(tx *store.Tx, guid string, on bool) error {
	_, err := tx.Exec(`INSERT INTO streams_login_settings (guid, iam_token_only) VALUES (?, ?)
		ON CONFLICT (guid) DO UPDATE SET iam_token_only = excluded.iam_token_only`, guid, boolInt(on))
	return err
}

// UpdateParameters changes the parameters a live deployment accepts
// changing: ParamIAMTokenOnly. Live connections that logged in with an API
// key are closed by the next re-authorization sweep, started at once.
func (s *Service) UpdateParameters(ctx context.Context, guid string, params map[string]any) error {
	const op = "streams.UpdateParameters"
	for name := range params {
		if name != ParamIAMTokenOnly {
			return errs.Ef(op, errs.Invalid, "PARAMETER_NOT_UPDATABLE", "%s cannot be changed on an existing deployment; only %s can", name, ParamIAMTokenOnly).On("field", "parameters."+name)
		}
	}
	on, err := iamTokenOnly(params)
	if err != nil {
		return err
	}
	s.mu.Lock()
	d := s.deployments[guid]
	s.mu.Unlock()
	if d == nil {
		return errs.Ef(op, errs.NotExist, "DEPLOYMENT_NOT_FOUND", "no Event Streams deployment %s", guid)
	}
	if err := s.db.Tx(ctx, func(tx *store.Tx) error { return setIAMTokenOnlyTx(tx, guid, on) }); err != nil {
		return errs.Internalf(op, err)
	}
	s.CredentialsRevoked(guid)
	return nil
}

func (s *Service) iamTokenOnly(ctx context.Context, guid string) (bool, error) {
	var on int
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		return tx.QueryRow(`SELECT iam_token_only FROM streams_login_settings WHERE guid=?`, guid).Scan(&on)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return on != 0, err
}

// kafkaLogin checks a Kafka login as Event Streams does: SASL OAUTHBEARER
// with an IAM access token (checked as the REST APIs check bearer tokens),
// or SASL PLAIN with user "token" and an API key unless the deployment
// takes IAM tokens only. What the login may do comes from the principal's
// policies on this deployment: on the whole instance, or scoped to its
// cluster, topics, groups and transactional ids.
func (s *Service) kafkaLogin(guid, account string) broker.LoginChecker {
	return func(ctx context.Context, cr broker.Credentials) (broker.Login, error) {
		var (
			p    *auth.Principal
			err  error
			what = "API key"
		)
		switch cr.Mechanism {
		case "OAUTHBEARER":
			what = "IAM access token's identity"
			p, err = s.iam.AuthenticateToken(ctx, cr.Secret)
			if err != nil {
				if isTemporary(err) {
					return broker.Login{}, broker.Temporary("the IAM access token cannot be checked now; try again")
				}
				return broker.Login{}, errors.New("the IAM access token is not valid or has expired: get a new one from IAM (POST /identity/token)")
			}
			if p.Type == auth.Service {
				return broker.Login{}, errors.New("a service token cannot log in to Kafka: use a user's or service ID's IAM access token")
			}
		default:
			only, err := s.iamTokenOnly(ctx, guid)
			if err != nil {
				return broker.Login{}, broker.Temporary("the deployment's login settings cannot be read now; try again")
			}
			if only {
				return broker.Login{}, errors.New("this deployment accepts IAM access tokens only: log in with SASL OAUTHBEARER, not PLAIN with an API key")
			}
			if cr.User != "token" {
				return broker.Login{}, errors.New(`the SASL user name must be "token" and the password an API key`)
			}
			p, err = s.iam.AuthenticateAPIKey(ctx, cr.Secret)
			if err != nil {
				if isTemporary(err) {
					return broker.Login{}, broker.Temporary("the API key cannot be checked now; try again")
				}
				return broker.Login{}, errors.New("the API key is not valid")
			}
		}
		login, err := s.kafkaGrants(ctx, p, what, guid, account)
		if err != nil {
			return broker.Login{}, err
		}
		login.Expires, login.Principal = p.TokenExpires, p.IAMID
		return login, nil
	}
}

func isTemporary(err error) bool {
	k := errs.KindOf(err)
	return k == errs.Unavailable || k == errs.Internal || k == errs.Other
}

// kafkaGrants is what p's policies let it do on the deployment; what names
// the credential in a refusal.
func (s *Service) kafkaGrants(ctx context.Context, p *auth.Principal, what, guid, account string) (broker.Login, error) {
	var login broker.Login
	lv, err := s.accessFor(ctx, p, guid, account)
	switch {
	case err == nil:
		login.Access = lv.access
	case errs.KindOf(err) != errs.Permission:
		return broker.Login{}, broker.Temporary("the credentials' access cannot be checked now; try again")
	}
	scoped, err := s.iam.ResourceGrants(ctx, p, auth.Resource{AccountID: account, ServiceName: ServiceName, ServiceInstance: guid})
	if err != nil {
		return broker.Login{}, broker.Temporary("the credentials' access cannot be checked now; try again")
	}
	cluster := login.Access != broker.NoAccess
	for _, g := range scoped {
		typ, ok := broker.ParseResourceType(g.ResourceType)
		if !ok {
			continue
		}
		for _, lv := range accessLevels {
			if auth.Allows(g.Actions, lv.action) {
				name := g.Resource
				if name == "" {
					name = "*"
				}
				login.Grants = append(login.Grants, broker.Grant{Type: typ, Name: name, Access: lv.access})
				cluster = cluster || typ == broker.ClusterResource
				break
			}
		}
	}
	if !cluster {
		return broker.Login{}, fmt.Errorf("the %s has no Reader, Writer or Manager role on Event Streams instance %s: a policy on the whole instance or on its resource type cluster is needed to connect", what, guid)
	}
	return login, nil
}
