package httpapi

import (
	"net/http"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/operation"
)

// Storage is the role that moves a VM's files between this host's storage
// locations (GET /1.0/host lists them).
type Storage interface {
	MoveStorage(name string, req api.VMMoveStorage) (*operation.Op, error)
}

func (s *Server) storageRoutes() []route {
	return []route{
		{"POST", "/1.0/vms/{name}/move-storage", s.moveStorage},
	}
}

func (s *Server) moveStorage(w http.ResponseWriter, r *http.Request) {
	var req api.VMMoveStorage
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.roles.Storage.MoveStorage(r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}
