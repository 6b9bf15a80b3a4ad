// Package console is Keyline's web console: server-rendered pages, embedded
// in the binary, that do everything through Keyline's own HTTP APIs, in
// process, as the signed-in user. It implements no rule of its own: every
// permission check, validation and audit event is the API's.
//
// A user signs in with an API key, which the console exchanges for a bearer
// token at the API's token endpoint and then forgets. The token stays in an
// in-memory session; the browser holds only a random session id in an
// HttpOnly, SameSite=Strict cookie. Every form carries the session's CSRF
// token, compared in constant time. Each API call is a request to the API's
// own http.Handler (see inProcess), carrying the browser's address, agent
// and correlation id, so the Activity Tracker names who really acted.
//
// The pages: the resource list; Manage > Access (IAM) > Authorizations with
// the create form and removal warnings; Access policies (user and service
// ID roles, down to Event Streams topics, groups and transactional ids),
// listed, created and removed; a Key Protect instance's keys and
// their lifecycle; the catalog (Key Protect, Event Streams); a deployment's
// overview with its live Tasks panel; the Activity Tracker with a live
// follow mode. Controls IAM would refuse are hidden (Config.Authz), and a
// refused call shows the API's error with its status.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/client"
	"github.com/keyline/keyline/internal/clock"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/seal"
	"github.com/keyline/keyline/internal/store"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Config is what the console needs from the server that mounts it.
type Config struct {
	// API is the handler of every Keyline API (the server's mux). The console
	// calls it in process with the signed-in user's bearer token.
	API http.Handler
	// Authn verifies the API key a user signs in with.
	Authn auth.Authenticator
	// Authz, when set, lets pages hide the controls IAM would refuse the
	// user; the API still decides every call. Nil shows every control.
	Authz  auth.Authorizer
	Secure bool // served over TLS: cookies get the Secure attribute
	Logger *slog.Logger
	Clock  clock.Clock
	// DB and Sealer, when set, keep sessions in the database sealed under
	// the master key, so every node sharing it serves them; without them
	// sessions live in this process's memory.
	DB     *store.DB
	Sealer *seal.AEAD
}

// Console serves the web console.
type Console struct {
	cfg      Config
	sessions *sessions
	pages    map[string]pageTemplate
	mux      *http.ServeMux
}

// New builds the console; it fails if a template does not parse.
func New(cfg Config) (*Console, error) {
	if cfg.API == nil || cfg.Authn == nil {
		return nil, errors.New("console: Config.API and Config.Authn are required")
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	pages, err := parsePages(templateFS)
	if err != nil {
		return nil, err
	}
	// Each in-process call gets the API edge's request info of its own (the
	// API path in audit events), built from the browser's address, agent and
	// correlation id that inProcess carries over. It is not logged again.
	cfg.API = httpapi.Middleware(nil, cfg.API)
	c := &Console{cfg: cfg, sessions: newSessions(cfg.Clock), pages: pages, mux: http.NewServeMux()}
	if cfg.DB != nil && cfg.Sealer != nil {
		if err := cfg.DB.Migrate(context.Background(), sessionMigrations); err != nil {
			return nil, err
		}
		c.sessions.db, c.sessions.sealer, c.sessions.logger = cfg.DB, cfg.Sealer, cfg.Logger
	}
	c.routes()
	return c, nil
}

// Register mounts the console on mux at /, /console/... and /static/....
func (c *Console) Register(mux *http.ServeMux) {
	mux.Handle("GET /{$}", http.RedirectHandler("/console/", http.StatusSeeOther))
	mux.Handle("/console/", c)
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	mux.Handle("GET /static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-cache")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		files.ServeHTTP(w, r)
	}))
}

// ServeHTTP serves the console's pages with its security headers.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if c.cfg.Secure {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	m := c.mux
	m.HandleFunc("GET /console/signin", c.signinPage)
	m.HandleFunc("POST /console/signin", c.signin)
	m.Handle("POST /console/signout", c.action(c.signout))

	m.Handle("GET /console/{$}", c.page(c.dashboard))

	m.Handle("GET /console/iam/authorizations", c.page(c.authorizations))
	m.Handle("GET /console/iam/authorizations/create", c.page(c.authorizationForm))
	m.Handle("POST /console/iam/authorizations", c.action(c.createAuthorization))
	m.Handle("POST /console/iam/authorizations/{id}/delete", c.action(c.deleteAuthorization))
	m.Handle("GET /console/iam/policies", c.page(c.accessPolicies))
	m.Handle("GET /console/iam/policies/create", c.page(c.accessPolicyForm))
	m.Handle("POST /console/iam/policies", c.action(c.createAccessPolicy))
	m.Handle("POST /console/iam/policies/{id}/delete", c.action(c.deleteAccessPolicy))

	m.Handle("GET /console/kms/{guid}", c.page(c.keys))
	m.Handle("POST /console/kms/{guid}/keys", c.action(c.createKey))
	m.Handle("POST /console/kms/{guid}/keys/{id}/delete", c.action(c.deleteKey))
	m.Handle("POST /console/kms/{guid}/keys/{id}/{action}", c.action(c.keyAction))

	m.Handle("GET /console/catalog/{$}", c.page(c.catalog))
	m.Handle("GET /console/catalog/key-protect", c.page(c.kmsForm))
	m.Handle("POST /console/catalog/key-protect", c.action(c.provisionKMS))
	m.Handle("GET /console/catalog/event-streams", c.page(c.provisionForm))
	m.Handle("POST /console/catalog/event-streams", c.action(c.provision))

	m.Handle("GET /console/deployments/{guid}", c.page(c.deployment))
	m.Handle("GET /console/deployments/{guid}/tasks", c.page(c.deploymentTasks))
	m.Handle("POST /console/deployments/{guid}/backups", c.action(c.createBackup))
	m.Handle("POST /console/deployments/{guid}/restore", c.action(c.restoreBackup))
	m.Handle("POST /console/deployments/{guid}/credentials", c.action(c.createCredentials))
	m.Handle("POST /console/deployments/{guid}/credentials/{key}/delete", c.action(c.deleteCredentials))
	m.Handle("POST /console/deployments/{guid}/delete", c.action(c.deleteDeployment))
	m.Handle("POST /console/deployments/{guid}/topics", c.action(c.createTopic))
	m.Handle("POST /console/deployments/{guid}/topics/{name}/delete", c.action(c.deleteTopic))
	m.Handle("GET /console/deployments/{guid}/topics/{name}", c.page(c.topicPage))
	m.Handle("POST /console/deployments/{guid}/topics/{name}", c.action(c.updateTopic))
	m.Handle("GET /console/deployments/{guid}/groups/{group}", c.page(c.groupPage))
	m.Handle("POST /console/deployments/{guid}/groups/{group}/delete", c.action(c.deleteGroup))
	m.Handle("POST /console/deployments/{guid}/reclamation/restore", c.action(c.restoreDeployment))

	m.Handle("GET /console/activity", c.page(c.activity))
	m.Handle("GET /console/activity/stream", c.page(c.activityStream))

	m.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		c.renderError(w, r, c.sessions.get(r), http.StatusNotFound, "Page not found", "There is no console page at "+r.URL.Path+".")
	})
}

// handler is a console page or action for a signed-in user.
type handler func(w http.ResponseWriter, r *http.Request, s *session, api *caller)

// page serves a GET for a signed-in user; others go to the sign-in page.
func (c *Console) page(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sess := c.sessions.get(r)
		if sess == nil {
			http.Redirect(w, r, "/console/signin?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		}
		h(w, r, sess, c.caller(sess))
	})
}

// action serves a form POST: it needs a session and the session's CSRF token.
func (c *Console) action(h handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		sess := c.sessions.get(r)
		if sess == nil {
			c.renderError(w, r, nil, http.StatusUnauthorized, "Signed out", "Your session has ended. Sign in again and repeat the action.")
			return
		}
		if err := r.ParseForm(); err != nil {
			c.renderError(w, r, sess, http.StatusBadRequest, "Bad form", "The form could not be read.")
			return
		}
		if !validCSRF(sess.csrf, r.PostForm.Get(csrfField)) {
			c.cfg.Logger.Warn("console: form refused without a valid CSRF token", "path", r.URL.Path)
			c.renderError(w, r, sess, http.StatusForbidden, "Form refused",
				"This form did not carry a valid security token, so nothing was changed. Reload the page and try again.")
			return
		}
		h(w, r, sess, c.caller(sess))
	})
}

// redirect ends an action: the next page shows msg once.
func (c *Console) redirect(w http.ResponseWriter, r *http.Request, s *session, to, msg string) {
	if msg != "" {
		c.sessions.setFlash(s, msg)
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// caller calls the APIs as one signed-in user.
type caller struct {
	c     *client.Client
	token string
}

func (c *Console) caller(s *session) *caller {
	return &caller{c: c.apiClient(), token: s.token}
}

func (c *Console) apiClient() *client.Client {
	return &client.Client{BaseURL: "http://keyline.console", HTTP: &http.Client{Transport: inProcess{api: c.cfg.API}, Timeout: 60 * time.Second}}
}

// do sends one API call with the user's token. The request is marked
// anonymous for the client only because the token comes from the session,
// not from an API key the client would exchange.
func (a *caller) do(ctx context.Context, method, path string, header map[string]string, body, out any) error {
	h := map[string]string{"Authorization": "Bearer " + a.token}
	for k, v := range header {
		h[k] = v
	}
	return a.c.Do(ctx, client.Request{Method: method, Path: path, Header: h, Body: body, Anonymous: true}, out)
}

func (a *caller) get(ctx context.Context, path string, out any) error {
	return a.do(ctx, http.MethodGet, path, nil, nil, out)
}

// stream opens a streaming GET (server-sent events) as the user.
func (a *caller) stream(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.c.BaseURL+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	req.Header.Set("Accept", "text/event-stream")
	hc := *a.c.HTTP
	hc.Timeout = 0
	return hc.Do(req)
}

// apiError is the API's error as the console shows it.
func apiError(err error) *client.Error {
	var e *client.Error
	if errors.As(err, &e) {
		return e
	}
	return &client.Error{Status: http.StatusBadGateway, Message: "The API could not be reached: " + err.Error()}
}

// can asks IAM whether the user may perform action on r, to decide whether
// to show a control. It decides nothing else: the API checks every call.
func (c *Console) can(ctx context.Context, s *session, action string, r auth.Resource) bool {
	if c.cfg.Authz == nil {
		return true
	}
	if r.AccountID == "" {
		r.AccountID = s.principal.AccountID
	}
	p := s.principal
	return c.cfg.Authz.Authorize(ctx, &p, action, r) == nil
}

// safeNext keeps a post-sign-in redirect on this console.
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/console/") || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/console/"
	}
	return next
}

func (c *Console) signinPage(w http.ResponseWriter, r *http.Request) {
	if c.sessions.get(r) != nil {
		http.Redirect(w, r, safeNext(r.URL.Query().Get("next")), http.StatusSeeOther)
		return
	}
	c.renderSignin(w, r, http.StatusOK, "")
}

func (c *Console) renderSignin(w http.ResponseWriter, r *http.Request, status int, msg string) {
	token := randomToken()
	http.SetCookie(w, c.cookie(signinCookie, token, time.Hour))
	c.render(w, r, nil, status, "signin", view{Title: "Sign in", CSRF: token, Data: map[string]any{
		"Next": safeNext(r.FormValue("next")), "Error": msg,
	}})
}

// signin exchanges the API key for a token through the API's own token
// endpoint and keeps the token server-side; the key is not kept at all.
func (c *Console) signin(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		c.renderSignin(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	ck, err := r.Cookie(signinCookie)
	if err != nil || !validCSRF(ck.Value, r.PostForm.Get(csrfField)) {
		c.renderSignin(w, r, http.StatusForbidden, "The sign-in form expired. Enter your API key again.")
		return
	}
	apikey := strings.TrimSpace(r.PostForm.Get("apikey"))
	if apikey == "" {
		c.renderSignin(w, r, http.StatusBadRequest, "Enter an API key.")
		return
	}
	p, err := c.cfg.Authn.AuthenticateAPIKey(r.Context(), apikey)
	if err != nil {
		c.cfg.Logger.Info("console: sign-in refused")
		c.renderSignin(w, r, http.StatusUnauthorized, "That API key is not valid. Check that it was copied whole and has not been deleted.")
		return
	}
	tok, err := c.exchange(r.Context(), apikey)
	if err != nil {
		e := apiError(err)
		c.renderSignin(w, r, e.Status, "Signing in failed: "+e.Message)
		return
	}
	sess := c.sessions.create(*p, tok.AccessToken, c.cfg.Clock.Now().Add(time.Duration(tok.ExpiresIn)*time.Second))
	http.SetCookie(w, c.cookie(signinCookie, "", 0))
	http.SetCookie(w, c.cookie(sessionCookie, sess.id, 0))
	http.Redirect(w, r, safeNext(r.PostForm.Get("next")), http.StatusSeeOther)
}

type tokenResponse struct {
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
}

func (c *Console) exchange(ctx context.Context, apikey string) (tokenResponse, error) {
	form := url.Values{"grant_type": {"urn:ibm:params:oauth:grant-type:apikey"}, "apikey": {apikey}}
	var tok tokenResponse
	err := c.apiClient().Do(ctx, client.Request{Method: http.MethodPost, Path: "/identity/token", Anonymous: true,
		Header: map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, Body: []byte(form.Encode())}, &tok)
	if err == nil && (tok.AccessToken == "" || tok.ExpiresIn <= 0) {
		err = fmt.Errorf("the token endpoint answered without a token")
	}
	return tok, err
}

func (c *Console) signout(w http.ResponseWriter, r *http.Request, s *session, _ *caller) {
	c.sessions.delete(s.id)
	http.SetCookie(w, c.cookie(sessionCookie, "", 0))
	http.Redirect(w, r, "/console/signin", http.StatusSeeOther)
}
