package server

import (
	"context"
	"net/http"

	"github.com/keyline/keyline/internal/httpapi"
)

// wire builds the services on the shared store and registers their routes.
func (s *Server) wire(ctx context.Context) error {
	return nil
}

// handler is every route behind the shared HTTP edge.
func (s *Server) handler() http.Handler {
	return httpapi.Middleware(s.cfg.Logger, s.mux)
}

// stop ends the services' background work.
func (s *Server) stop() {}
