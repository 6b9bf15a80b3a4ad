package streams

import (
	"net/http"
	"strings"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/streams/broker"
)

// handler serves a deployment's metadata and mounts its broker's admin REST
// API. The metadata stays readable while the deployment is locked; the
// admin API then answers with the lock's reason.
func (s *Service) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /messagehub/{guid}", s.getDeployment)
	mux.HandleFunc("/messagehub/{guid}/admin/", s.admin)
	return mux
}

func (s *Service) getDeployment(w http.ResponseWriter, r *http.Request) {
	const op = "streams.getDeployment"
	ctx, p, err := httpapi.Authenticate(r, s.iam)
	if err != nil {
		writeError(w, err)
		return
	}
	info, err := s.Deployment(ctx, r.PathValue("guid"))
	if err != nil {
		writeError(w, err)
		return
	}
	res := auth.Resource{AccountID: info.AccountID, ServiceName: ServiceName, ServiceInstance: info.GUID}
	if err := s.iam.Authorize(ctx, p, auth.InstanceRead, res); err != nil {
		// Not found and not allowed look the same to a stranger.
		writeError(w, errs.Ef(op, errs.NotExist, "DEPLOYMENT_NOT_FOUND", "no Event Streams deployment %s", info.GUID))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, info)
}

func (s *Service) admin(w http.ResponseWriter, r *http.Request) {
	const op = "streams.admin"
	guid := r.PathValue("guid")
	// Topic names in the path are customer data: the access log shows the
	// route only.
	if rest := strings.TrimPrefix(r.URL.Path, "/messagehub/"+guid+"/admin/topics/"); rest != r.URL.Path && rest != "" {
		httpapi.RedactPath(r.Context(), "/messagehub/"+guid+"/admin/topics/{name}")
	}
	if rest := strings.TrimPrefix(r.URL.Path, "/messagehub/"+guid+"/admin/consumergroups/"); rest != r.URL.Path && rest != "" {
		httpapi.RedactPath(r.Context(), "/messagehub/"+guid+"/admin/consumergroups/{group}")
	}
	d, err := s.get(op, guid)
	if err != nil {
		// A stranger learns nothing of which deployments exist.
		if _, aerr := s.adminPrincipal(r); aerr != nil {
			err = aerr
		}
		writeError(w, err)
		return
	}
	if s.cl != nil && !s.leading(d) {
		// The deployment's leader serves its admin API.
		s.forwardAdmin(w, r, guid)
		return
	}
	d.mu.Lock()
	brk, lock, suspended, account := d.brk, d.lock, d.rec.Suspended, d.account
	d.mu.Unlock()
	switch {
	case suspended:
		writeError(w, errs.E(op, errs.Conflict, "DEPLOYMENT_SUSPENDED", "the deployment is deleted and waits for reclamation: restore it to use it"))
		return
	case lock != "":
		writeError(w, errs.E(op, errs.Conflict, "DEPLOYMENT_LOCKED", lock))
		return
	case brk == nil:
		writeError(w, errs.E(op, errs.Unavailable, "", "the deployment's Kafka listener is not running"))
		return
	}
	prefix := "/messagehub/" + guid
	h := http.StripPrefix(prefix, brk.AdminHandler(s.adminLogin(guid, account)))
	h.ServeHTTP(w, r.WithContext(withAdminCaller(r.Context())))
}

// adminLogin says what an admin REST caller may do on the deployment.
func (s *Service) adminLogin(guid, account string) broker.AdminAuthenticator {
	return func(r *http.Request) (broker.Access, error) {
		p, err := s.adminPrincipal(r)
		if err != nil {
			return broker.NoAccess, err
		}
		setAdminCaller(r.Context(), p)
		lv, err := s.accessFor(r.Context(), p, guid, account)
		if err != nil {
			return broker.NoAccess, err
		}
		return lv.access, nil
	}
}

// adminPrincipal authenticates an admin REST call: an IAM bearer token, or
// basic auth "token:<API key>" as Event Streams accepts.
func (s *Service) adminPrincipal(r *http.Request) (*auth.Principal, error) {
	const op = "streams.adminLogin"
	if user, pass, ok := r.BasicAuth(); ok {
		if user != "token" {
			return nil, errs.E(op, errs.Unauthenticated, "", `basic auth needs user "token" and an API key as the password`)
		}
		return s.iam.AuthenticateAPIKey(r.Context(), pass)
	}
	_, p, err := httpapi.Authenticate(r, s.iam)
	return p, err
}

// writeError writes err in the admin REST API's error shape.
func writeError(w http.ResponseWriter, err error) {
	e := errs.As(err)
	if e == nil {
		e = errs.Internalf("streams", err)
	}
	msg := e.Msg
	if strings.TrimSpace(msg) == "" {
		msg = e.Kind.String()
	}
	httpapi.WriteJSON(w, e.Kind.Status(), map[string]any{"error_code": e.Kind.Status(), "message": msg, "code": e.Code})
}
