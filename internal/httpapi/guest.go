package httpapi

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/operation"
)

// Guest is the role that works inside a VM's guest through its agent:
// integration services, key-value pairs, time sync, freeze and thaw, files,
// and commands (exec) with their interactive sessions.
type Guest interface {
	Integration(ctx context.Context, name string) ([]api.IntegrationService, error)
	UpdateIntegration(ctx context.Context, name string, req api.IntegrationUpdate) ([]api.IntegrationService, error)
	KVP(ctx context.Context, name string) (map[string]string, *api.GuestInfo, error)
	SetKVP(ctx context.Context, name, key, value string) error
	DeleteKVP(ctx context.Context, name, key string) error
	TimeSync(ctx context.Context, name string) (api.TimeSyncResult, error)
	Freeze(ctx context.Context, name string, req api.FreezeRequest) (api.FreezeStatus, error)
	Thaw(ctx context.Context, name string) (api.FreezeStatus, error)
	FreezeStatus(ctx context.Context, name string) (api.FreezeStatus, error)
	WriteGuestFile(ctx context.Context, name, path string, mode int, r io.Reader, size int64) (api.FileInfo, error)
	ReadGuestFile(ctx context.Context, name, path string, w io.Writer, sized func(int64)) (api.FileInfo, error)
	ExecVM(name string, req api.ExecRequest) (*operation.Op, error)
	SessionConn(ctx context.Context, opID string) (net.Conn, error)
}

func (s *Server) guestRoutes() []route {
	return []route{
		{"GET", "/1.0/vms/{name}/integration", s.getIntegration},
		{"PATCH", "/1.0/vms/{name}/integration", s.patchIntegration},
		{"GET", "/1.0/vms/{name}/kvp", s.getKVP},
		{"PUT", "/1.0/vms/{name}/kvp/{key}", s.putKVP},
		{"DELETE", "/1.0/vms/{name}/kvp/{key}", s.deleteKVP},
		{"POST", "/1.0/vms/{name}/time-sync", s.timeSync},
		{"GET", "/1.0/vms/{name}/freeze", s.getFreeze},
		{"POST", "/1.0/vms/{name}/freeze", s.freeze},
		{"POST", "/1.0/vms/{name}/thaw", s.thaw},
		{"GET", "/1.0/vms/{name}/files", s.getFile},
		{"PUT", "/1.0/vms/{name}/files", streamedBody(s.putFile)},
		{"POST", "/1.0/vms/{name}/exec", withBodyLimit(maxExecBody, s.execVM)},
		{"GET", "/1.0/operations/{id}/session", s.session},
	}
}

func (s *Server) getIntegration(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Guest.Integration(r.Context(), r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) patchIntegration(w http.ResponseWriter, r *http.Request) {
	var req api.IntegrationUpdate
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.roles.Guest.UpdateIntegration(r.Context(), r.PathValue("name"), req)
	answer(w, out, err)
}

// kvpAnswer is GET /1.0/vms/{name}/kvp: what the host set and what the guest reports.
type kvpAnswer struct {
	Host  map[string]string `json:"host"`
	Guest *api.GuestInfo    `json:"guest,omitempty"`
}

func (s *Server) getKVP(w http.ResponseWriter, r *http.Request) {
	host, guest, err := s.roles.Guest.KVP(r.Context(), r.PathValue("name"))
	if host == nil {
		host = map[string]string{}
	}
	answer(w, kvpAnswer{Host: host, Guest: guest}, err)
}

func (s *Server) putKVP(w http.ResponseWriter, r *http.Request) {
	var req api.KVPPut
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	err := s.roles.Guest.SetKVP(r.Context(), r.PathValue("name"), r.PathValue("key"), req.Value)
	answer(w, map[string]string{r.PathValue("key"): req.Value}, err)
}

func (s *Server) deleteKVP(w http.ResponseWriter, r *http.Request) {
	err := s.roles.Guest.DeleteKVP(r.Context(), r.PathValue("name"), r.PathValue("key"))
	answer(w, map[string]string{}, err)
}

func (s *Server) timeSync(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Guest.TimeSync(r.Context(), r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) getFreeze(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Guest.FreezeStatus(r.Context(), r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) freeze(w http.ResponseWriter, r *http.Request) {
	var req api.FreezeRequest
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.roles.Guest.Freeze(r.Context(), r.PathValue("name"), req)
	answer(w, out, err)
}

func (s *Server) thaw(w http.ResponseWriter, r *http.Request) {
	out, err := s.roles.Guest.Thaw(r.Context(), r.PathValue("name"))
	answer(w, out, err)
}

// putFile streams the request body into a file in the guest.
func (s *Server) putFile(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("path")
	mode := 0o644
	if m := r.URL.Query().Get("mode"); m != "" {
		v, err := strconv.ParseUint(m, 8, 32)
		if err != nil || v > 0o7777 {
			writeError(w, fmt.Errorf("mode: %q is not an octal file mode like 0644: %w", m, errdefs.ErrInvalid))
			return
		}
		mode = int(v)
	}
	if r.ContentLength < 0 {
		writeError(w, fmt.Errorf("body: send a Content-Length (the file's size) so progress and checks work: %w", errdefs.ErrInvalid))
		return
	}
	out, err := s.roles.Guest.WriteGuestFile(r.Context(), r.PathValue("name"), path, mode, r.Body, r.ContentLength)
	answer(w, out, err)
}

// getFile streams a file of the guest, chunked: its size goes in X-Hv-Size
// (unless the guest cannot tell, as for /proc files) rather than Content-Length,
// because HTTP/1.1 sends the X-Hv-Sha256 trailer, known only at the end, only
// with chunked encoding.
func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	started := false
	w.Header().Set("Trailer", "X-Hv-Sha256")
	info, err := s.roles.Guest.ReadGuestFile(r.Context(), r.PathValue("name"), r.URL.Query().Get("path"), w, func(size int64) {
		w.Header().Set("Content-Type", "application/octet-stream")
		if size >= 0 {
			w.Header().Set("X-Hv-Size", strconv.FormatInt(size, 10))
		}
		w.WriteHeader(http.StatusOK)
		started = true
	})
	if err != nil {
		if !started {
			writeError(w, err)
			return
		}
		// Mid-stream: the body is short of Content-Length, so the client sees the failure.
		s.log.Warn("guest file read failed mid-stream", "vm", r.PathValue("name"), "err", err)
		panic(http.ErrAbortHandler)
	}
	w.Header().Set("X-Hv-Sha256", info.SHA256)
}

func (s *Server) execVM(w http.ResponseWriter, r *http.Request) {
	var req api.ExecRequest
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.roles.Guest.ExecVM(r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

// session joins an interactive exec's pseudo-terminal in the guest: after the
// Upgrade the connection carries the terminal's raw bytes both ways. The
// operation ends (with the exit code) when the command exits.
func (s *Server) session(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "hv-session" {
		writeError(w, fmt.Errorf("session: send 'Connection: Upgrade' and 'Upgrade: hv-session' (as hv vm exec -it does): %w", errdefs.ErrInvalid))
		return
	}
	backend, err := s.roles.Guest.SessionConn(r.Context(), r.PathValue("id"))
	if err != nil {
		writeError(w, err)
		return
	}
	upgradeAndPipe(w, backend, "hv-session")
}
