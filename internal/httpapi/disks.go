package httpapi

import (
	"context"
	"net/http"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/operation"
)

// Disks is the role of the disk tools that work on image files by path,
// outside any VM.
type Disks interface {
	CreateDisk(ctx context.Context, req api.DiskCreate) (api.DiskInfo, error)
	DiskInfo(ctx context.Context, path string) (api.DiskInfo, error)
	ResizeDisk(ctx context.Context, req api.DiskResize) (api.DiskInfo, error)
	ConvertDisk(ctx context.Context, req api.DiskConvert) (*operation.Op, error)
}

func (s *Server) diskRoutes() []route {
	return []route{
		{"POST", "/1.0/disks", s.createDisk},
		{"GET", "/1.0/disks/info", s.diskInfo},
		{"POST", "/1.0/disks/resize", s.resizeDisk},
		{"POST", "/1.0/disks/convert", s.convertDisk},
	}
}

func (s *Server) createDisk(w http.ResponseWriter, r *http.Request) {
	var req api.DiskCreate
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	info, err := s.roles.Disks.CreateDisk(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

func (s *Server) diskInfo(w http.ResponseWriter, r *http.Request) {
	info, err := s.roles.Disks.DiskInfo(r.Context(), r.URL.Query().Get("path"))
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
	info, err := s.roles.Disks.ResizeDisk(r.Context(), req)
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
	op, err := s.roles.Disks.ConvertDisk(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}
