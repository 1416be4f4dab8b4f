package httpapi

import (
	"context"
	"net/http"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/operation"
)

// Devices is the role that adds and removes a VM's NICs and data disks.
type Devices interface {
	AddNIC(name string, req api.NICAdd) (*operation.Op, error)
	RemoveNIC(name, nic string) (*operation.Op, error)
	AddDisk(ctx context.Context, name string, req api.DiskAdd) (*operation.Op, error)
	RemoveDisk(name, disk string) (*operation.Op, error)
}

func (s *Server) deviceRoutes() []route {
	return []route{
		{"POST", "/1.0/vms/{name}/nics", s.addNIC},
		{"DELETE", "/1.0/vms/{name}/nics/{nic}", s.removeNIC},
		{"POST", "/1.0/vms/{name}/disks", s.addDisk},
		{"DELETE", "/1.0/vms/{name}/disks/{disk}", s.removeDisk},
	}
}

func (s *Server) addNIC(w http.ResponseWriter, r *http.Request) {
	var req api.NICAdd
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.roles.Devices.AddNIC(r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) removeNIC(w http.ResponseWriter, r *http.Request) {
	op, err := s.roles.Devices.RemoveNIC(r.PathValue("name"), r.PathValue("nic"))
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) addDisk(w http.ResponseWriter, r *http.Request) {
	var req api.DiskAdd
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.roles.Devices.AddDisk(r.Context(), r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) removeDisk(w http.ResponseWriter, r *http.Request) {
	op, err := s.roles.Devices.RemoveDisk(r.PathValue("name"), r.PathValue("disk"))
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}
