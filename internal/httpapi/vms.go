package httpapi

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/operation"
)

// VMs is the role that keeps VMs: their lifecycle, settings, state and
// serial console.
type VMs interface {
	ListVMs() []api.VM
	GetVM(ctx context.Context, name string) (api.VM, error)
	CreateVM(ctx context.Context, req api.VMCreate) (*operation.Op, error)
	UpdateVM(ctx context.Context, name string, req api.VMUpdate) (api.VM, error)
	DeleteVM(name string) (*operation.Op, error)
	ChangeState(name string, req api.VMStatePut) (*operation.Op, error)
	ConsoleDial(ctx context.Context, name string) (net.Conn, error)
	ConsoleLogPath(name string) (string, error)
}

func (s *Server) vmRoutes() []route {
	return []route{
		{"GET", "/1.0/vms", s.listVMs},
		{"POST", "/1.0/vms", s.createVM},
		{"GET", "/1.0/vms/{name}", s.getVM},
		{"PATCH", "/1.0/vms/{name}", s.updateVM},
		{"DELETE", "/1.0/vms/{name}", s.deleteVM},
		{"PUT", "/1.0/vms/{name}/state", s.putState},
		{"GET", "/1.0/vms/{name}/console", s.console},
		{"GET", "/1.0/vms/{name}/console/log", s.consoleLog},
	}
}

func (s *Server) listVMs(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.roles.VMs.ListVMs())
}

func (s *Server) getVM(w http.ResponseWriter, r *http.Request) {
	vm, err := s.roles.VMs.GetVM(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *Server) createVM(w http.ResponseWriter, r *http.Request) {
	var req api.VMCreate
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	op, err := s.roles.VMs.CreateVM(r.Context(), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) updateVM(w http.ResponseWriter, r *http.Request) {
	var req api.VMUpdate
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	vm, err := s.roles.VMs.UpdateVM(r.Context(), r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, vm)
}

func (s *Server) deleteVM(w http.ResponseWriter, r *http.Request) {
	op, err := s.roles.VMs.DeleteVM(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

func (s *Server) putState(w http.ResponseWriter, r *http.Request) {
	var req api.VMStatePut
	if err := decode(r, &req); err != nil {
		writeError(w, err)
		return
	}
	if req.Action == "" {
		writeError(w, fmt.Errorf("action: missing; use one of start, stop, kill, pause, resume, save: %w", errdefs.ErrInvalid))
		return
	}
	op, err := s.roles.VMs.ChangeState(r.PathValue("name"), req)
	if err != nil {
		writeError(w, err)
		return
	}
	accepted(w, op)
}

// console upgrades the HTTP connection to a raw byte stream joined to the VM's
// serial console (Upgrade: hv-console), as a terminal attach needs.
func (s *Server) console(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != "hv-console" {
		writeError(w, fmt.Errorf("console: send 'Connection: Upgrade' and 'Upgrade: hv-console' (as hv vm console does): %w", errdefs.ErrInvalid))
		return
	}
	backend, err := s.roles.VMs.ConsoleDial(r.Context(), r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	upgradeAndPipe(w, backend, "hv-console")
}

// upgradeAndPipe answers 101 and copies bytes between the client and backend
// until either side ends.
func upgradeAndPipe(w http.ResponseWriter, backend net.Conn, protocol string) {
	defer backend.Close()
	conn, buf, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, fmt.Errorf("cannot take over the connection: %v: %w", err, errdefs.ErrUnavailable))
		return
	}
	defer conn.Close()
	_, _ = buf.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + protocol + "\r\n\r\n")
	if err := buf.Flush(); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(backend, readerWithBuffered(buf.Reader, conn)); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, backend); done <- struct{}{} }()
	<-done
}

// readerWithBuffered first drains what the HTTP server already read from the
// client, then reads the connection itself.
func readerWithBuffered(br *bufio.Reader, c io.Reader) io.Reader {
	if br.Buffered() == 0 {
		return c
	}
	b, _ := br.Peek(br.Buffered())
	return io.MultiReader(bytesReader(b), c)
}

func (s *Server) consoleLog(w http.ResponseWriter, r *http.Request) {
	path, err := s.roles.VMs.ConsoleLogPath(r.PathValue("name"))
	if err != nil {
		writeError(w, err)
		return
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0) // hv's own file, never a link to another
	if err != nil {
		if os.IsNotExist(err) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			return // the VM never printed anything yet
		}
		writeError(w, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = io.Copy(w, f)
}
