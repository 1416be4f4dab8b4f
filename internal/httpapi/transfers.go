package httpapi

import (
	"net/http"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/operation"
)

// Transfers is the role that exports whole VMs into directories and
// imports them back.
type Transfers interface {
	ExportVM(name string, req api.VMExport) (*operation.Op, error)
	ImportVM(req api.VMImport) (*operation.Op, error)
}

func (s *Server) transferRoutes() []route {
	return []route{
		{"POST", "/1.0/vms/{name}/export", s.exportVM},
		{"POST", "/1.0/imports", s.importVM},
	}
}

func (s *Server) exportVM(w http.ResponseWriter, r *http.Request) {
	var req api.VMExport
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.roles.Transfers.ExportVM(r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) importVM(w http.ResponseWriter, r *http.Request) {
	var req api.VMImport
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.roles.Transfers.ImportVM(req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}
