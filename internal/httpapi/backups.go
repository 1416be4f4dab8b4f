package httpapi

import (
	"context"
	"io"
	"net/http"
	"strconv"

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
	// BackupFiles lists the files an open backup serves beside its disks
	// (configuration, UEFI variables, kernel, initrd); OpenBackupFile opens
	// one for reading.
	BackupFiles(name, backup string) ([]api.BackupFile, error)
	OpenBackupFile(name, backup, file string) (io.ReadCloser, api.BackupFile, error)
}

func (s *Server) backupRoutes() []route {
	return []route{
		{"POST", "/1.0/vms/{name}/backups", s.createBackup},
		{"GET", "/1.0/vms/{name}/backups", s.listBackups},
		{"GET", "/1.0/vms/{name}/backups/{backup}", s.getBackup},
		{"DELETE", "/1.0/vms/{name}/backups/{backup}", s.abortBackup},
		{"POST", "/1.0/vms/{name}/backups/{backup}/finish", s.finishBackup},
		{"GET", "/1.0/vms/{name}/backups/{backup}/disks/{disk}/changes", s.backupChanges},
		{"GET", "/1.0/vms/{name}/backups/{backup}/files", s.listBackupFiles},
		{"GET", "/1.0/vms/{name}/backups/{backup}/files/{file}", s.getBackupFile},
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

func (s *Server) listBackupFiles(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Backups.BackupFiles(r.PathValue("name"), r.PathValue("backup"))
	if out == nil {
		out = []api.BackupFile{}
	}
	answer(w, out, err)
}

// getBackupFile sends the file's bytes with its length; a file that ends
// early (changed meanwhile) cuts the answer short, so the client sees it.
func (s *Server) getBackupFile(w http.ResponseWriter, r *http.Request) {
	rc, info, err := s.roles.Backups.OpenBackupFile(r.PathValue("name"), r.PathValue("backup"), r.PathValue("file"))
	if err != nil {
		writeError(w, err)
		return
	}
	defer rc.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	w.Header().Set(backupFileHeader, info.File)
	w.WriteHeader(http.StatusOK)
	if n, err := io.Copy(w, io.LimitReader(rc, info.Size)); err != nil || n != info.Size {
		s.log.Warn("a backup's file ended early", "vm", r.PathValue("name"), "file", info.File, "sent", n, "size", info.Size, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// backupFileHeader names the file in the VM's directory (api.BackupFile.File).
const backupFileHeader = "X-Hv-File"
