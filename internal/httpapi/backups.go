package httpapi

import (
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

func (s *Server) createBackup(w http.ResponseWriter, r *http.Request) {
	var req api.BackupCreate
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.host.CreateBackup(r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) listBackups(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.ListBackups(r.PathValue("name"))
	if out == nil {
		out = []api.Backup{}
	}
	answer(w, out, err)
}

func (s *Server) getBackup(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.GetBackup(r.PathValue("name"), r.PathValue("backup"))
	answer(w, out, err)
}

func (s *Server) backupChanges(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.BackupChanges(r.Context(), r.PathValue("name"), r.PathValue("backup"), r.PathValue("disk"))
	if out == nil {
		out = []api.Extent{}
	}
	answer(w, out, err)
}

func (s *Server) finishBackup(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.FinishBackup(r.Context(), r.PathValue("name"), r.PathValue("backup"))
	answer(w, out, err)
}

func (s *Server) abortBackup(w http.ResponseWriter, r *http.Request) {
	err := s.host.AbortBackup(r.Context(), r.PathValue("name"), r.PathValue("backup"))
	answer(w, struct{}{}, err)
}

func (s *Server) getTracking(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.Tracking(r.Context(), r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) deleteReferencePoint(w http.ResponseWriter, r *http.Request) {
	err := s.host.DeleteReferencePoint(r.Context(), r.PathValue("name"), r.PathValue("reference"))
	answer(w, struct{}{}, err)
}

// backupFiler serves the files a backup holds beside its disks. It is asked
// of the host apart from Host while Host is split into role interfaces (it
// belongs with the backups role); a host without it answers 503.
type backupFiler interface {
	BackupFiles(name, backup string) ([]api.BackupFile, error)
	OpenBackupFile(name, backup, file string) (io.ReadCloser, api.BackupFile, error)
}

func (s *Server) backupFiler() (backupFiler, error) {
	bf, ok := s.host.(backupFiler)
	if !ok {
		return nil, fmt.Errorf("this hvd does not serve a backup's files; upgrade hvd: %w", errdefs.ErrUnavailable)
	}
	return bf, nil
}

func (s *Server) listBackupFiles(w http.ResponseWriter, r *http.Request) {
	bf, err := s.backupFiler()
	if err != nil {
		writeError(w, err)
		return
	}
	out, err := bf.BackupFiles(r.PathValue("name"), r.PathValue("backup"))
	if out == nil {
		out = []api.BackupFile{}
	}
	answer(w, out, err)
}

// getBackupFile sends the file's bytes with its length; a file that ends
// early (changed meanwhile) cuts the answer short, so the client sees it.
func (s *Server) getBackupFile(w http.ResponseWriter, r *http.Request) {
	bf, err := s.backupFiler()
	if err != nil {
		writeError(w, err)
		return
	}
	rc, info, err := bf.OpenBackupFile(r.PathValue("name"), r.PathValue("backup"), r.PathValue("file"))
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
