package server

import (
	"context"
	"net/http"

	"github.com/keyline/keyline/internal/audit"
	"github.com/keyline/keyline/internal/auth"
	"github.com/keyline/keyline/internal/errs"
	"github.com/keyline/keyline/internal/httpapi"
)

// authorizeOperator lets an account administrator's token through to a
// /v1/sys operation (denials are audited) and makes the operation's audit
// event.
func (s *Server) authorizeOperator(w http.ResponseWriter, r *http.Request, action, permission string) (context.Context, *audit.Event, bool) {
	svc := s.svc
	if s.live.Load() == nil || svc == nil {
		writeSysError(w, errs.E(action, errs.Unavailable, "SEALED", "Keyline is sealed"))
		return nil, nil, false
	}
	ctx, p, err := httpapi.Authenticate(r, svc.iam)
	if err != nil {
		writeSysError(w, err)
		return nil, nil, false
	}
	target := audit.Target{ID: "crn:v1:bluemix:public:keyline:global:a/" + p.AccountID + "::", TypeURI: "keyline/seal"}
	if err := svc.iam.Authorize(ctx, p, permission, auth.Resource{AccountID: p.AccountID, ServiceName: "keyline"}); err != nil {
		s.Audit.Denied(ctx, action, target, err)
		writeSysError(w, err)
		return nil, nil, false
	}
	return ctx, audit.NewEvent(ctx, action, target, audit.Success, http.StatusOK), true
}

// rotateMasterKeyAPI: POST starts (or resumes) a rotation, GET shows its
// progress; both need an account administrator.
func (s *Server) rotateMasterKeyAPI(w http.ResponseWriter, r *http.Request) {
	const action = "keyline.sys.rotate-master-key"
	switch r.Method {
	case http.MethodGet:
		ctx, _, ok := s.authorizeOperator(w, r, action, auth.PolicyRead)
		if !ok {
			return
		}
		st, err := s.RotationStatus(ctx)
		if err != nil {
			writeSysError(w, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusOK, st)
	case http.MethodPost:
		ctx, ev, ok := s.authorizeOperator(w, r, action, auth.PolicyWrite)
		if !ok {
			return
		}
		st, err := s.RotateMasterKey(ctx, ev)
		if err != nil {
			s.logInternal(r, action, err)
			writeSysError(w, err)
			return
		}
		httpapi.WriteJSON(w, http.StatusAccepted, st)
	default:
		writeSysError(w, errs.E("sys", errs.Invalid, "", "use GET or POST"))
	}
}

// RekeyRequest is POST /v1/sys/rekey: the threshold of current shares and
// the new split (Vault's field names).
type RekeyRequest struct {
	Keys            []string `json:"keys"`
	SecretShares    int      `json:"secret_shares"`
	SecretThreshold int      `json:"secret_threshold"`
}

// RekeyResponse carries the new shares, shown once.
type RekeyResponse struct {
	Keys            []string `json:"keys_b64"`
	SecretShares    int      `json:"secret_shares"`
	SecretThreshold int      `json:"secret_threshold"`
}

// rekeyAPI needs both an account administrator's token and the threshold
// of current shares.
func (s *Server) rekeyAPI(w http.ResponseWriter, r *http.Request) {
	const action = "keyline.sys.rekey"
	if r.Method != http.MethodPost {
		writeSysError(w, errs.E("sys", errs.Invalid, "", "use POST"))
		return
	}
	ctx, ev, ok := s.authorizeOperator(w, r, action, auth.PolicyWrite)
	if !ok {
		return
	}
	var req RekeyRequest
	if err := httpapi.DecodeJSON(r, &req, 256<<10, true); err != nil {
		writeSysError(w, err)
		return
	}
	res, err := s.Rekey(ctx, req.Keys, req.SecretShares, req.SecretThreshold, ev)
	if err != nil {
		if e := errs.As(err); e != nil && e.Kind != errs.Internal {
			failed := audit.NewEvent(ctx, action, ev.Target, audit.Failure, e.Kind.Status())
			if aerr := s.Audit.Record(ctx, failed); aerr != nil {
				s.cfg.Logger.Error("audit of rekey", "err", aerr)
			}
		}
		s.logInternal(r, action, err)
		writeSysError(w, err)
		return
	}
	httpapi.WriteJSON(w, http.StatusOK, RekeyResponse{Keys: res.Shares, SecretShares: len(res.Shares), SecretThreshold: res.Threshold})
}

func (s *Server) logInternal(r *http.Request, action string, err error) {
	if e := errs.As(err); e == nil || e.Kind == errs.Internal {
		s.cfg.Logger.Error(action, "err", err, "correlation_id", httpapi.CorrelationID(r.Context()))
	}
}
