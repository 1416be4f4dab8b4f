package httpapi

import (
	"context"
	"net/http"

	"github.com/hvproject/hv/api"
)

// Switches is the role that keeps the host's virtual switches.
type Switches interface {
	ListSwitches() []api.Switch
	GetSwitch(name string) (api.Switch, error)
	CreateSwitch(ctx context.Context, req api.SwitchCreate) (api.Switch, error)
	DeleteSwitch(ctx context.Context, name string) error
}

func (s *Server) switchRoutes() []route {
	return []route{
		{"GET", "/1.0/switches", s.listSwitches},
		{"POST", "/1.0/switches", s.createSwitch},
		{"GET", "/1.0/switches/{name}", s.getSwitch},
		{"DELETE", "/1.0/switches/{name}", s.deleteSwitch},
	}
}

func (s *Server) listSwitches(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.roles.Switches.ListSwitches())
}

func (s *Server) getSwitch(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Switches.GetSwitch(r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) createSwitch(w http.ResponseWriter, r *http.Request) {
	var req api.SwitchCreate
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.roles.Switches.CreateSwitch(r.Context(), req)
	answer(w, out, err)
}

func (s *Server) deleteSwitch(w http.ResponseWriter, r *http.Request) {
	err := s.roles.Switches.DeleteSwitch(r.Context(), r.PathValue("name"))
	answer(w, map[string]string{}, err)
}
