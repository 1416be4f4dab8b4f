package httpapi

import (
	"net/http"

	"github.com/hvproject/hv/api"
)

func (s *Server) listCheckpoints(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.ListCheckpoints(r.Context(), r.PathValue("name"))
	if out == nil {
		out = []api.Checkpoint{} // [] rather than null for programs
	}
	answer(w, out, err)
}

func (s *Server) getCheckpoint(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.GetCheckpoint(r.Context(), r.PathValue("name"), r.PathValue("checkpoint"))
	answer(w, out, err)
}

func (s *Server) createCheckpoint(w http.ResponseWriter, r *http.Request) {
	var req api.CheckpointCreate
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.host.CreateCheckpoint(r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) renameCheckpoint(w http.ResponseWriter, r *http.Request) {
	var req api.CheckpointRename
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.host.RenameCheckpoint(r.Context(), r.PathValue("name"), r.PathValue("checkpoint"), req)
	answer(w, out, err)
}

func (s *Server) deleteCheckpoint(w http.ResponseWriter, r *http.Request) {
	subtree, err := boolParam(r, "subtree")
	if err != nil {
		writeError(w, err)
		return
	}
	op, err := s.host.DeleteCheckpoint(r.PathValue("name"), r.PathValue("checkpoint"), subtree)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) applyCheckpoint(w http.ResponseWriter, r *http.Request) {
	var req api.CheckpointApply
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.host.ApplyCheckpoint(r.PathValue("name"), r.PathValue("checkpoint"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) exportVM(w http.ResponseWriter, r *http.Request) {
	var req api.VMExport
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.host.ExportVM(r.PathValue("name"), req)
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
	op, err := s.host.ImportVM(req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}
