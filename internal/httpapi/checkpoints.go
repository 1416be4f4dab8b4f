package httpapi

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
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

// decodeOptional is decode for a body whose fields are all optional: no body
// at all (none sent, or an empty chunked one) leaves v as it is.
func decodeOptional(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	br := bufio.NewReader(r.Body)
	if _, err := br.Peek(1); errors.Is(err, io.EOF) {
		return nil
	}
	r.Body = struct {
		io.Reader
		io.Closer
	}{br, r.Body}
	return decode(r, v)
}

// boolParam reads an optional true/false query parameter (absent is false).
func boolParam(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s: %q is not a boolean; use %s=true or %s=false: %w", name, v, name, name, errdefs.ErrInvalid)
	}
	return b, nil
}
