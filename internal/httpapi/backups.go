package httpapi

import (
	"context"
	"net/http"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/operation"
)

// Backups is the role that takes a VM's backups and tracks the changes of
// its disks between them.
type Backups interface {
	CreateBackup(name string, req api.BackupCreate) (*operation.Op, error)
	ListBackups(name string) ([]api.Backup, error)
	GetBackup(name, backup string) (api.Backup, error)
	BackupChanges(ctx context.Context, name, backup, disk string) ([]api.Extent, error)
	FinishBackup(ctx context.Context, name, backup string) (api.ReferencePoint, error)
	AbortBackup(ctx context.Context, name, backup string) error
	Tracking(ctx context.Context, name string) (api.ChangeTracking, error)
	DeleteReferencePoint(ctx context.Context, name, reference string) error
}

func (s *Server) backupRoutes() []route {
	return []route{
		{"POST", "/1.0/vms/{name}/backups", s.createBackup},
		{"GET", "/1.0/vms/{name}/backups", s.listBackups},
		{"GET", "/1.0/vms/{name}/backups/{backup}", s.getBackup},
		{"DELETE", "/1.0/vms/{name}/backups/{backup}", s.abortBackup},
		{"POST", "/1.0/vms/{name}/backups/{backup}/finish", s.finishBackup},
		{"GET", "/1.0/vms/{name}/backups/{backup}/disks/{disk}/changes", s.backupChanges},
		{"GET", "/1.0/vms/{name}/tracking", s.getTracking},
		{"DELETE", "/1.0/vms/{name}/tracking/{reference}", s.deleteReferencePoint},
	}
}

func (s *Server) createBackup(w http.ResponseWriter, r *http.Request) {
	var req api.BackupCreate
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.roles.Backups.CreateBackup(r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) listBackups(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Backups.ListBackups(r.PathValue("name"))
	if out == nil {
		out = []api.Backup{}
	}
	answer(w, out, err)
}

func (s *Server) getBackup(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Backups.GetBackup(r.PathValue("name"), r.PathValue("backup"))
	answer(w, out, err)
}

func (s *Server) backupChanges(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Backups.BackupChanges(r.Context(), r.PathValue("name"), r.PathValue("backup"), r.PathValue("disk"))
	if out == nil {
		out = []api.Extent{}
	}
	answer(w, out, err)
}

func (s *Server) finishBackup(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Backups.FinishBackup(r.Context(), r.PathValue("name"), r.PathValue("backup"))
	answer(w, out, err)
}

func (s *Server) abortBackup(w http.ResponseWriter, r *http.Request) {
	err := s.roles.Backups.AbortBackup(r.Context(), r.PathValue("name"), r.PathValue("backup"))
	answer(w, struct{}{}, err)
}

func (s *Server) getTracking(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Backups.Tracking(r.Context(), r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) deleteReferencePoint(w http.ResponseWriter, r *http.Request) {
	err := s.roles.Backups.DeleteReferencePoint(r.Context(), r.PathValue("name"), r.PathValue("reference"))
	answer(w, struct{}{}, err)
}
