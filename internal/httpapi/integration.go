package httpapi

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
)

func (s *Server) getIntegration(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.Integration(r.Context(), r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) patchIntegration(w http.ResponseWriter, r *http.Request) {
	var req api.IntegrationUpdate
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.host.UpdateIntegration(r.Context(), r.PathValue("name"), req)
	answer(w, out, err)
}

// kvpAnswer is GET /1.0/vms/{name}/kvp: what the host set and what the guest reports.
type kvpAnswer struct {
	Host  map[string]string `json:"host"`
	Guest *api.GuestInfo    `json:"guest,omitempty"`
}

func (s *Server) getKVP(w http.ResponseWriter, r *http.Request) {
	host, guest, err := s.host.KVP(r.Context(), r.PathValue("name"))
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
	err := s.host.SetKVP(r.Context(), r.PathValue("name"), r.PathValue("key"), req.Value)
	answer(w, map[string]string{r.PathValue("key"): req.Value}, err)
}

func (s *Server) deleteKVP(w http.ResponseWriter, r *http.Request) {
	err := s.host.DeleteKVP(r.Context(), r.PathValue("name"), r.PathValue("key"))
	answer(w, map[string]string{}, err)
}

func (s *Server) timeSync(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.TimeSync(r.Context(), r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) getFreeze(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.FreezeStatus(r.Context(), r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) freeze(w http.ResponseWriter, r *http.Request) {
	var req api.FreezeRequest
	if err := decodeOptional(r, &req); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.host.Freeze(r.Context(), r.PathValue("name"), req)
	answer(w, out, err)
}

func (s *Server) thaw(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.Thaw(r.Context(), r.PathValue("name"))
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
	out, err := s.host.WriteGuestFile(r.Context(), r.PathValue("name"), path, mode, r.Body, r.ContentLength)
	answer(w, out, err)
}

// getFile streams a file of the guest, chunked: its size goes in X-Hv-Size
// (unless the guest cannot tell, as for /proc files) rather than Content-Length,
// because HTTP/1.1 sends the X-Hv-Sha256 trailer, known only at the end, only
// with chunked encoding.
func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	started := false
	w.Header().Set("Trailer", "X-Hv-Sha256")
	info, err := s.host.ReadGuestFile(r.Context(), r.PathValue("name"), r.URL.Query().Get("path"), w, func(size int64) {
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

func (s *Server) addNIC(w http.ResponseWriter, r *http.Request) {
	var req api.NICAdd
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.host.AddNIC(r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) removeNIC(w http.ResponseWriter, r *http.Request) {
	op, err := s.host.RemoveNIC(r.PathValue("name"), r.PathValue("nic"))
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) addDisk(w http.ResponseWriter, r *http.Request) {
	var req api.DiskAdd
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.host.AddDisk(r.Context(), r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) removeDisk(w http.ResponseWriter, r *http.Request) {
	op, err := s.host.RemoveDisk(r.PathValue("name"), r.PathValue("disk"))
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) listSwitches(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.host.ListSwitches())
}

func (s *Server) getSwitch(w http.ResponseWriter, r *http.Request) {
	out, err := s.host.GetSwitch(r.PathValue("name"))
	answer(w, out, err)
}

func (s *Server) createSwitch(w http.ResponseWriter, r *http.Request) {
	var req api.SwitchCreate
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	out, err := s.host.CreateSwitch(r.Context(), req)
	answer(w, out, err)
}

func (s *Server) deleteSwitch(w http.ResponseWriter, r *http.Request) {
	err := s.host.DeleteSwitch(r.Context(), r.PathValue("name"))
	answer(w, map[string]string{}, err)
}

// answer writes v, or the error.
func answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}
