package httpapi

import (
	"net/http"

	"github.com/hvproject/hv/api"
)

func (s *Server) createDisk(w http.ResponseWriter, r *http.Request) {
	var req api.DiskCreate
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	info, err := s.host.CreateDisk(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) diskInfo(w http.ResponseWriter, r *http.Request) {
	info, err := s.host.DiskInfo(r.Context(), r.URL.Query().Get("path"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) resizeDisk(w http.ResponseWriter, r *http.Request) {
	var req api.DiskResize
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	info, err := s.host.ResizeDisk(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) convertDisk(w http.ResponseWriter, r *http.Request) {
	var req api.DiskConvert
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.host.ConvertDisk(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}
