package iam

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"sync"
	"time"
	"unsafe"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/store"
)

// Token lifetimes, as IBM Cloud IAM issues them.
const (
	AccessTokenTTL  = time.Hour
	RefreshTokenTTL = 30 * 24 * time.Hour
)

// Grant types of the token endpoint.
const (
	GrantAPIKey       = "urn:ibm:params:oauth:grant-type:apikey"
	GrantRefreshToken = "refresh_token"
)

// maxTokenLen bounds what is parsed: our tokens are about 1 KiB.
const maxTokenLen = 8 << 10

// JWK is one public key of the JWKS document.
type JWK struct {
	Kty string `json:"kty"`
	N   string `json:"n"`
	E   string `json:"e"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Kid string `json:"kid"`
}

// JWKS is the set of keys tokens can be verified with (GET /identity/keys):
// every signing key still valid, whichever node created it, newest first.
func (s *Service) JWKS() []JWK {
	keys := s.signing.Load()
	out := make([]JWK, 0, len(keys.kids))
	for _, kid := range keys.kids {
		pub := keys.public[kid]
		out = append(out, JWK{Kty: "RSA", Alg: "RS256", Use: "sig", Kid: kid,
			N: base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
			E: base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes())})
	}
	return out
}

// Claims are the claims of Keyline's IAM tokens, named as IBM Cloud names them.
type Claims struct {
	jwt.RegisteredClaims
	IAMID     string         `json:"iam_id"`
	ID        string         `json:"id"`
	RealmID   string         `json:"realmid,omitempty"`
	Name      string         `json:"name,omitempty"`
	Email     string         `json:"email,omitempty"`
	SubType   string         `json:"sub_type,omitempty"`
	Account   AccountClaim   `json:"account"`
	GrantType string         `json:"grant_type"`
	Scope     string         `json:"scope"`
	ClientID  string         `json:"client_id"`
	APIKeyID  string         `json:"apikey_id,omitempty"`
	TokenUse  string         `json:"token_use"` // "access" or "refresh": a refresh token is never a bearer token
	Service   *ServiceClaims `json:"service,omitempty"`
}

// AccountClaim names the account of the identity.
type AccountClaim struct {
	BSS string `json:"bss"`
}

// ServiceClaims identify a Keyline service acting for one of its instances.
type ServiceClaims struct {
	Name        string `json:"name"`
	Instance    string `json:"instance"`
	InstanceCRN string `json:"instance_crn"`
}

// Token is the token endpoint's response.
type Token struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	Expiration   int64  `json:"expiration"`
	Scope        string `json:"scope"`
}

func (s *Service) sign(c Claims) (string, error) {
	t := jwt.NewWithClaims(jwt.SigningMethodRS256, c)
	cur := s.currentSigner()
	t.Header["kid"] = cur.kid
	return t.SignedString(cur.priv)
}

// tokenFor mints an access and a refresh token for an identity.
func (s *Service) tokenFor(id identity, apikeyID string) (Token, error) {
	const op = "iam.tokenFor"
	now := s.clock.Now()
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: s.issuer, Subject: id.Name, IssuedAt: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(AccessTokenTTL)), ID: uuid.NewString()},
		IAMID: id.IAMID, ID: id.IAMID, Name: id.Name, Account: AccountClaim{BSS: id.AccountID},
		GrantType: GrantAPIKey, Scope: "ibm openid", ClientID: "default", APIKeyID: apikeyID, TokenUse: "access",
	}
	if id.Kind == kindServiceID {
		c.SubType = "ServiceId"
		c.Subject = id.ID
	} else {
		c.RealmID, c.Email = "IBMid", id.Email
	}
	access, err := s.sign(c)
	if err != nil {
		return Token{}, errs.Internalf(op, err)
	}
	c.ID = uuid.NewString()
	c.ExpiresAt = jwt.NewNumericDate(now.Add(RefreshTokenTTL))
	c.TokenUse = "refresh"
	refresh, err := s.sign(c)
	if err != nil {
		return Token{}, errs.Internalf(op, err)
	}
	return Token{AccessToken: access, RefreshToken: refresh, TokenType: "Bearer", ExpiresIn: int(AccessTokenTTL / time.Second),
		Expiration: now.Add(AccessTokenTTL).Unix(), Scope: c.Scope}, nil
}

// TokenRequest is the form of the token endpoint.
type TokenRequest struct {
	GrantType    string
	APIKey       string
	RefreshToken string
}

// Token exchanges an API key (or a refresh token) for a bearer token. Only
// failures are audited, as IBM Cloud does: a successful exchange is routine.
func (s *Service) Token(ctx context.Context, req TokenRequest) (Token, error) {
	const op = "iam.Token"
	tok, err := s.token(ctx, req)
	if err != nil {
		s.recordFailure(ctx, ActionTokenCreate, auditTarget("", "", "iam-identity/token"), err)
		return Token{}, wrap(op, err)
	}
	return tok, nil
}

func (s *Service) token(ctx context.Context, req TokenRequest) (Token, error) {
	const op = "iam.Token"
	switch req.GrantType {
	case "":
		return Token{}, errs.E(op, errs.Invalid, "BXNIM0109E", "Property missing or empty. Property name(s): grant_type").On("field", "grant_type")
	case GrantAPIKey:
		if req.APIKey == "" {
			return Token{}, errs.E(op, errs.Invalid, "BXNIM0109E", "Property missing or empty. Property name(s): apikey").On("field", "apikey")
		}
		key, owner, err := s.lookupAPIKey(ctx, op, req.APIKey)
		if err != nil {
			return Token{}, err
		}
		return s.tokenFor(owner, key.ID)
	case GrantRefreshToken:
		if req.RefreshToken == "" {
			return Token{}, errs.E(op, errs.Invalid, "BXNIM0109E", "Property missing or empty. Property name(s): refresh_token").On("field", "refresh_token")
		}
		c, err := s.verify(req.RefreshToken, "refresh")
		if err != nil {
			return Token{}, errs.E(op, errs.Invalid, "BXNIM0407E", "Provided refresh token is invalid")
		}
		owner, err := s.checkLive(ctx, op, c)
		if err != nil {
			return Token{}, errs.E(op, errs.Invalid, "BXNIM0407E", "Provided refresh token is invalid")
		}
		return s.tokenFor(owner, c.APIKeyID)
	}
	return Token{}, errs.E(op, errs.Invalid, "unsupported_grant_type", "Unsupported grant_type: use urn:ibm:params:oauth:grant-type:apikey or refresh_token").On("field", "grant_type")
}

// ServiceToken mints an access token for a Keyline service (messagehub, is)
// acting for one of its instances, so it can call other services over HTTP;
// what it may do is decided by authorization policies at each call.
func (s *Service) ServiceToken(serviceName, accountID, instance, instanceCRN string) (Token, error) {
	const op = "iam.ServiceToken"
	now := s.clock.Now()
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{Issuer: s.issuer, Subject: instanceCRN, IssuedAt: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(AccessTokenTTL)), ID: uuid.NewString()},
		IAMID: "crn-" + instanceCRN, ID: "crn-" + instanceCRN, Name: serviceName, SubType: "CRN",
		Account: AccountClaim{BSS: accountID}, GrantType: "urn:ibm:params:oauth:grant-type:cr-token", Scope: "ibm openid",
		ClientID: serviceName, TokenUse: "access",
		Service: &ServiceClaims{Name: serviceName, Instance: instance, InstanceCRN: instanceCRN},
	}
	access, err := s.sign(c)
	if err != nil {
		return Token{}, errs.Internalf(op, err)
	}
	return Token{AccessToken: access, TokenType: "Bearer", ExpiresIn: int(AccessTokenTTL / time.Second),
		Expiration: now.Add(AccessTokenTTL).Unix(), Scope: c.Scope}, nil
}

// verify checks a token's signature, issuer, expiry (on the service's clock)
// and use. It says nothing about why a token is refused.
func (s *Service) verify(token, use string) (*Claims, error) {
	if len(token) > maxTokenLen {
		return nil, errBadToken
	}
	p := jwt.NewParser(jwt.WithValidMethods([]string{jwt.SigningMethodRS256.Alg()}), jwt.WithIssuer(s.issuer),
		jwt.WithExpirationRequired(), jwt.WithTimeFunc(s.clock.Now), jwt.WithStrictDecoding())
	var c Claims
	_, err := p.ParseWithClaims(token, &c, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if pub := s.verifyingKey(kid); pub != nil {
			return pub, nil
		}
		return nil, errBadToken
	})
	if err != nil || c.TokenUse != use || c.IAMID == "" || c.Account.BSS == "" {
		return nil, errBadToken
	}
	return &c, nil
}

var errBadToken = errs.E("iam.AuthenticateToken", errs.Unauthenticated, "BXNIM0407E", "The provided token is not valid or has expired")

// checkLive reads the token's identity and, for API key tokens, the key: a
// deleted key or identity revokes every token issued for it.
func (s *Service) checkLive(ctx context.Context, op string, c *Claims) (identity, error) {
	var id identity
	err := s.db.Read(ctx, func(tx *store.Tx) error {
		var err error
		if id, err = getIdentity(tx, op, c.IAMID); err != nil {
			return err
		}
		if c.APIKeyID != "" {
			var n int
			if err := tx.QueryRow(`SELECT COUNT(*) FROM iam_apikeys WHERE id = ? AND iam_id = ?`, c.APIKeyID, c.IAMID).Scan(&n); err != nil {
				return errs.Internalf(op, err)
			}
			if n == 0 {
				return errBadToken
			}
		}
		return nil
	})
	if errs.KindOf(err) == errs.NotExist {
		return identity{}, errBadToken
	}
	return id, err
}

// AuthenticateToken verifies a bearer token and returns its principal.
// Verified tokens are cached until they expire; deleting their API key or
// identity drops them from the cache in the same call.
func (s *Service) AuthenticateToken(ctx context.Context, token string) (*auth.Principal, error) {
	const op = "iam.AuthenticateToken"
	sum := tokenSum(token)
	now := s.clock.Now()
	trusted := s.trusted()
	if p, ok := s.tokens.get(sum, now); ok && trusted {
		return p, nil
	}
	gen := s.tokens.generation()
	c, err := s.verify(token, "access")
	if err != nil {
		return nil, err
	}
	var p *auth.Principal
	if c.Service != nil {
		if c.SubType != "CRN" || c.Service.Name == "" || c.Service.InstanceCRN == "" {
			return nil, errBadToken
		}
		p = &auth.Principal{IAMID: c.IAMID, AccountID: c.Account.BSS, Name: c.Service.Name, Type: auth.Service,
			ServiceName: c.Service.Name, SourceInstance: c.Service.Instance, SourceCRN: c.Service.InstanceCRN}
	} else {
		id, err := s.checkLive(ctx, op, c)
		if err != nil {
			return nil, err
		}
		p = id.principal()
	}
	p.CredentialType, p.TokenID, p.TokenExpires = "token", c.ID, c.ExpiresAt.Time
	if !trusted {
		return p, nil
	}
	s.tokens.put(gen, sum, cachedToken{principal: *p, expires: c.ExpiresAt.Time, apikeyID: c.APIKeyID})
	return p, nil
}

// AuthenticateAPIKey verifies an API key (Kafka SASL PLAIN, console sign-in).
func (s *Service) AuthenticateAPIKey(ctx context.Context, apikey string) (*auth.Principal, error) {
	const op = "iam.AuthenticateAPIKey"
	_, owner, err := s.lookupAPIKey(ctx, op, apikey)
	if err != nil {
		if errs.KindOf(err) == errs.Invalid {
			return nil, errs.E(op, errs.Unauthenticated, "BXNIM0415E", "Provided API key could not be found")
		}
		return nil, err
	}
	p := owner.principal()
	p.CredentialType = "apikey"
	return p, nil
}

// tokenSum is the SHA-256 of token, the key of its cache entry. It hashes
// the string's own bytes: []byte(token) would copy the token (about 1 KiB)
// to the heap on every call. Sum256 only reads them.
func tokenSum(token string) [32]byte {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}

// tokenCache remembers verified access tokens by their SHA-256 so that each
// call costs a map lookup, not an RSA verification and a database read.
type tokenCache struct {
	mu      sync.RWMutex
	gen     uint64 // bumped by every revocation
	entries map[[32]byte]cachedToken
}

type cachedToken struct {
	principal auth.Principal
	expires   time.Time
	apikeyID  string
}

const maxCachedTokens = 10000

func newTokenCache() *tokenCache { return &tokenCache{entries: map[[32]byte]cachedToken{}} }

func (c *tokenCache) get(sum [32]byte, now time.Time) (*auth.Principal, bool) {
	c.mu.RLock()
	e, ok := c.entries[sum]
	c.mu.RUnlock()
	if !ok || !now.Before(e.expires) {
		return nil, false
	}
	p := e.principal
	return &p, true
}

func (c *tokenCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

// put caches a token verified at generation gen, unless a revocation happened
// since: the verification may have read the key just before it was deleted.
func (c *tokenCache) put(gen uint64, sum [32]byte, e cachedToken) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return
	}
	if len(c.entries) >= maxCachedTokens {
		clear(c.entries)
	}
	c.entries[sum] = e
}

// revokeAll drops every cached token.
func (c *tokenCache) revokeAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.entries)
}

// revoke drops the cached tokens of an API key or of an identity.
func (c *tokenCache) revoke(apikeyID, iamID string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	for k, e := range c.entries {
		if (apikeyID != "" && e.apikeyID == apikeyID) || (iamID != "" && e.principal.IAMID == iamID) {
			delete(c.entries, k)
		}
	}
}
