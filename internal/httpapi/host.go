package httpapi

import (
	"context"
	"net/http"

	"github.com/hvproject/hv/api"
)

// Host is the role that describes the host itself.
type Host interface {
	Info() api.HostInfo
	RefreshHost(ctx context.Context) (api.HostInfo, error)
}

func (s *Server) hostRoutes() []route {
	return []route{
		{"GET", "/1.0/host", s.getHost},
		{"POST", "/1.0/host/refresh", s.refreshHost},
	}
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.roles.Host.Info())
}

func (s *Server) refreshHost(w http.ResponseWriter, r *http.Request) {
	h, err := s.roles.Host.RefreshHost(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}
