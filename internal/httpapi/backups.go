package httpapi

import (
	"net/http"

	"github.com/hvproject/hv/api"
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
