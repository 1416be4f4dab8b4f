package httpapi

import (
	"context"
	"net/http"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/operation"
)

// Checkpoints is the role that takes, applies, renames and deletes a VM's
// checkpoints.
type Checkpoints interface {
	ListCheckpoints(ctx context.Context, name string) ([]api.Checkpoint, error)
	GetCheckpoint(ctx context.Context, name, checkpoint string) (api.Checkpoint, error)
	CreateCheckpoint(name string, req api.CheckpointCreate) (*operation.Op, error)
	ApplyCheckpoint(name, checkpoint string, req api.CheckpointApply) (*operation.Op, error)
	DeleteCheckpoint(name, checkpoint string, subtree bool) (*operation.Op, error)
	RenameCheckpoint(ctx context.Context, name, checkpoint string, req api.CheckpointRename) (api.Checkpoint, error)
}

func (s *Server) checkpointRoutes() []route {
	return []route{
		{"GET", "/1.0/vms/{name}/checkpoints", s.listCheckpoints},
		{"POST", "/1.0/vms/{name}/checkpoints", s.createCheckpoint},
		{"GET", "/1.0/vms/{name}/checkpoints/{checkpoint}", s.getCheckpoint},
		{"PATCH", "/1.0/vms/{name}/checkpoints/{checkpoint}", s.renameCheckpoint},
		{"DELETE", "/1.0/vms/{name}/checkpoints/{checkpoint}", s.deleteCheckpoint},
		{"POST", "/1.0/vms/{name}/checkpoints/{checkpoint}/apply", s.applyCheckpoint},
	}
}

func (s *Server) listCheckpoints(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Checkpoints.ListCheckpoints(r.Context(), r.PathValue("name"))
	if out == nil {
		out = []api.Checkpoint{} // [] rather than null for programs
	}
	answer(w, out, err)
}

func (s *Server) getCheckpoint(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Checkpoints.GetCheckpoint(r.Context(), r.PathValue("name"), r.PathValue("checkpoint"))
	answer(w, out, err)
}

func (s *Server) createCheckpoint(w http.ResponseWriter, r *http.Request) {
	var req api.CheckpointCreate
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.roles.Checkpoints.CreateCheckpoint(r.PathValue("name"), req)
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
	out, err := s.roles.Checkpoints.RenameCheckpoint(r.Context(), r.PathValue("name"), r.PathValue("checkpoint"), req)
	answer(w, out, err)
}

func (s *Server) deleteCheckpoint(w http.ResponseWriter, r *http.Request) {
	subtree, err := boolParam(r, "subtree")
	if err != nil {
		writeError(w, err)
		return
	}
	op, err := s.roles.Checkpoints.DeleteCheckpoint(r.PathValue("name"), r.PathValue("checkpoint"), subtree)
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
	op, err := s.roles.Checkpoints.ApplyCheckpoint(r.PathValue("name"), r.PathValue("checkpoint"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}
