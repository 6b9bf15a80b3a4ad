package server

import (
	"html/template"
	"net/http"
	"strings"

	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
	"github.com/keyline/keyline/internal/kms/kpapi"
)

// route serves the seal API itself, then the other APIs when unsealed, and
// while sealed a 503 in each API's own format (the console: its unseal page).
func (s *Server) route(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/sys/seal-status":
		s.sealStatus(w, r)
		return
	case "/v1/sys/unseal":
		s.unsealAPI(w, r)
		return
	case "/v1/sys/seal":
		s.sealAPI(w, r)
		return
	case "/v1/sys/rotate-master-key":
		s.rotateMasterKeyAPI(w, r)
		return
	case "/v1/sys/rekey":
		s.rekeyAPI(w, r)
		return
	}
	if mux := s.live.Load(); mux != nil {
		mux.ServeHTTP(w, r)
		return
	}
	s.sealedAnswer(w, r)
}

// vaultErrors is Vault's error body, the format of the /v1/sys APIs.
type vaultErrors struct {
	Errors []string `json:"errors"`
}

func writeSysError(w http.ResponseWriter, err error) {
	e := errs.As(err)
	if e == nil {
		e = errs.E("sys", errs.Internal, "", "internal error")
	}
	httpapi.WriteJSON(w, e.Kind.Status(), vaultErrors{Errors: []string{e.Msg}})
}

func (s *Server) sealStatus(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		writeSysError(w, errs.E("sys", errs.Invalid, "", "use GET"))
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, s.barrier.status())
}

// UnsealRequest is POST /v1/sys/unseal, in Vault's shape.
type UnsealRequest struct {
	Key   string `json:"key"`
	Reset bool   `json:"reset"`
}

// unsealAPI takes no token: the shares are the credential, as in Vault.
func (s *Server) unsealAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeSysError(w, errs.E("sys", errs.Invalid, "", "use POST"))
		return
	}
	var req UnsealRequest
	if err := httpapi.DecodeJSON(r, &req, 64<<10, true); err != nil {
		writeSysError(w, err)
		return
	}
	if req.Key == "" && !req.Reset {
		writeSysError(w, errs.E("sys.unseal", errs.Invalid, "", "give an unseal key share in \"key\""))
		return
	}
	st, err := s.Unseal(r.Context(), req.Key, req.Reset)
	if err != nil {
		e := errs.As(err)
		if e == nil || e.Kind == errs.Internal {
			s.cfg.Logger.Error("unseal", "err", err, "correlation_id", httpapi.CorrelationID(r.Context()))
		}
		// The status rides along so that clients see the progress kept.
		status := http.StatusBadRequest
		if e != nil {
			status = e.Kind.Status()
		}
		msg := "internal error"
		if e != nil {
			msg = e.Msg
		}
		httpapi.WriteJSON(w, status, struct {
			vaultErrors
			SealStatus
		}{vaultErrors{[]string{msg}}, st})
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, st)
}

// sealAPI is the emergency brake: an account administrator's token seals
// the server at once.
func (s *Server) sealAPI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		writeSysError(w, errs.E("sys", errs.Invalid, "", "use POST"))
		return
	}
	ctx, ev, ok := s.authorizeOperator(w, r, "keyline.sys.seal", auth.PolicyWrite)
	if !ok {
		return
	}
	if err := s.Seal(ctx, ev); err != nil {
		writeSysError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, s.barrier.status())
}

// sealedMessage is what every refused call says.
const sealedMessage = "Keyline is sealed: an operator must unseal it with `keyline operator unseal` (GET /v1/sys/seal-status shows the progress)"

func (s *Server) sealedAnswer(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	err := errs.E("sealed", errs.Unavailable, "SEALED_ERR", sealedMessage)
	switch {
	case p == "/" || strings.HasPrefix(p, "/console") || strings.HasPrefix(p, "/static/"):
		s.unsealPage(w, r)
	case strings.HasPrefix(p, "/api/v2/"):
		kpapi.WriteError(w, "Keyline is sealed", err)
	case p == "/healthz":
		http.Error(w, "sealed", http.StatusServiceUnavailable)
	default:
		httpapi.WritePlatformError(w, r, s.cfg.Logger, "sealed", err)
	}
}

var unsealTemplate = template.Must(template.New("unseal").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Keyline is sealed</title></head>
<body><main>
<h1>Keyline is sealed</h1>
{{if or (eq .Type "pkcs11") (eq .Type "kms")}}<p>An operator sealed this Keyline. It unseals itself through its {{.Type}} seal at
its next start: restart it.</p>
{{else}}<p>No key, record or setting can be read until operators give {{.T}} of the {{.N}} unseal key shares
({{.Progress}} given so far). Run <code>keyline operator unseal</code> once per share, each operator with their own.</p>{{end}}
</main></body></html>
`))

// unsealPage is the console while sealed. Shares are not typed into a web
// page: each operator gives theirs through the CLI or the API.
func (s *Server) unsealPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusServiceUnavailable)
	unsealTemplate.Execute(w, s.barrier.status())
}
