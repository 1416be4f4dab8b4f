// Package httpapi serves hv's REST API (version 1.0) over HTTP: it decodes
// requests, calls the host service and encodes answers. It holds no policy.
package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/operation"
)

// Host is what the API needs of the host service (an interface so handlers can be
// tested against a fake).
type Host interface {
	Info() api.HostInfo
	RefreshHost(ctx context.Context) (api.HostInfo, error)
	ListVMs() []api.VM
	GetVM(ctx context.Context, name string) (api.VM, error)
	CreateVM(ctx context.Context, req api.VMCreate) (*operation.Op, error)
	UpdateVM(ctx context.Context, name string, req api.VMUpdate) (api.VM, error)
	DeleteVM(name string) (*operation.Op, error)
	ChangeState(name string, req api.VMStatePut) (*operation.Op, error)
	ExecVM(name string, req api.ExecRequest) (*operation.Op, error)
	ConsoleDial(ctx context.Context, name string) (net.Conn, error)
	ConsoleLogPath(name string) (string, error)
	CreateDisk(ctx context.Context, req api.DiskCreate) (api.DiskInfo, error)
	DiskInfo(ctx context.Context, path string) (api.DiskInfo, error)
	ResizeDisk(ctx context.Context, req api.DiskResize) (api.DiskInfo, error)
	ConvertDisk(ctx context.Context, req api.DiskConvert) (*operation.Op, error)

	// Integration services.
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
	SessionConn(ctx context.Context, opID string) (net.Conn, error)

	// NICs, data disks, switches.
	AddNIC(name string, req api.NICAdd) (*operation.Op, error)
	RemoveNIC(name, nic string) (*operation.Op, error)
	AddDisk(ctx context.Context, name string, req api.DiskAdd) (*operation.Op, error)
	RemoveDisk(name, disk string) (*operation.Op, error)
	ListSwitches() []api.Switch
	GetSwitch(name string) (api.Switch, error)
	CreateSwitch(ctx context.Context, req api.SwitchCreate) (api.Switch, error)
	DeleteSwitch(ctx context.Context, name string) error

	// Checkpoints, export and import.
	ListCheckpoints(ctx context.Context, name string) ([]api.Checkpoint, error)
	GetCheckpoint(ctx context.Context, name, checkpoint string) (api.Checkpoint, error)
	CreateCheckpoint(name string, req api.CheckpointCreate) (*operation.Op, error)
	ApplyCheckpoint(name, checkpoint string, req api.CheckpointApply) (*operation.Op, error)
	DeleteCheckpoint(name, checkpoint string, subtree bool) (*operation.Op, error)
	RenameCheckpoint(ctx context.Context, name, checkpoint string, req api.CheckpointRename) (api.Checkpoint, error)
	ExportVM(name string, req api.VMExport) (*operation.Op, error)
	ImportVM(req api.VMImport) (*operation.Op, error)

	// Backups and change tracking.
	CreateBackup(name string, req api.BackupCreate) (*operation.Op, error)
	ListBackups(name string) ([]api.Backup, error)
	GetBackup(name, backup string) (api.Backup, error)
	BackupChanges(ctx context.Context, name, backup, disk string) ([]api.Extent, error)
	FinishBackup(ctx context.Context, name, backup string) (api.ReferencePoint, error)
	AbortBackup(ctx context.Context, name, backup string) error
	Tracking(ctx context.Context, name string) (api.ChangeTracking, error)
	DeleteReferencePoint(ctx context.Context, name, reference string) error
}

// Timeouts bound how long a client may hold a connection without making
// progress, so that slow or stalled clients (slow loris) cannot pile up
// connections once hvd listens on the network. Streams (events, consoles,
// exec sessions, file transfers, operation waits) run as long as they move.
// Zero turns a timeout off.
type Timeouts struct {
	// Header: to send a request's headers (http.Server's ReadHeaderTimeout).
	Header time.Duration
	// Read: to send a whole request, headers and JSON body (ReadTimeout);
	// for an upload, between two reads of its body.
	Read time.Duration
	// Write: for the client to take each write of an answer. It bounds no
	// whole answer, as http.Server's WriteTimeout would: that would cut
	// event streams, downloads and long waits.
	Write time.Duration
	// Idle: between two requests on a kept-alive connection (IdleTimeout).
	Idle time.Duration
}

// DefaultTimeouts are generous for any client on a working network.
func DefaultTimeouts() Timeouts {
	return Timeouts{Header: 10 * time.Second, Read: 30 * time.Second, Write: 30 * time.Second, Idle: 2 * time.Minute}
}

// maxHeaderBytes bounds a request's headers; hv's are a few hundred bytes.
const maxHeaderBytes = 64 << 10

// Server is the API's HTTP handler.
type Server struct {
	// Timeouts apply to each request; set them before serving.
	Timeouts Timeouts

	host Host
	ops  *operation.Manager
	bus  *events.Bus
	log  *slog.Logger
	mux  *http.ServeMux
}

// New wires the routes.
func New(h Host, ops *operation.Manager, bus *events.Bus, log *slog.Logger) *Server {
	s := &Server{Timeouts: DefaultTimeouts(), host: h, ops: ops, bus: bus, log: log, mux: http.NewServeMux()}
	for _, r := range s.routes() {
		s.mux.HandleFunc(r.method+" "+r.path, r.handler)
	}
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, api.Error{Error: "no such API path: " + r.Method + " " + r.URL.Path + "; see /1.0/openapi.yaml", Code: http.StatusNotFound})
	})
	return s
}

type route struct {
	method, path string
	handler      http.HandlerFunc
}

// routes is the API's table of contents; openapi.yaml documents each entry (a
// test checks that they agree).
func (s *Server) routes() []route {
	return []route{
		{"GET", "/1.0", s.getRoot},
		{"GET", "/1.0/openapi.yaml", s.getOpenAPI},
		{"GET", "/1.0/host", s.getHost},
		{"POST", "/1.0/host/refresh", s.refreshHost},
		{"GET", "/1.0/vms", s.listVMs},
		{"POST", "/1.0/vms", s.createVM},
		{"GET", "/1.0/vms/{name}", s.getVM},
		{"PATCH", "/1.0/vms/{name}", s.updateVM},
		{"DELETE", "/1.0/vms/{name}", s.deleteVM},
		{"PUT", "/1.0/vms/{name}/state", s.putState},
		{"POST", "/1.0/vms/{name}/exec", withBodyLimit(maxExecBody, s.execVM)},
		{"GET", "/1.0/vms/{name}/console", s.console},
		{"GET", "/1.0/vms/{name}/console/log", s.consoleLog},
		{"GET", "/1.0/operations", s.listOps},
		{"GET", "/1.0/operations/{id}", s.getOp},
		{"DELETE", "/1.0/operations/{id}", s.cancelOp},
		{"GET", "/1.0/events", s.events},
		{"POST", "/1.0/disks", s.createDisk},
		{"GET", "/1.0/disks/info", s.diskInfo},
		{"POST", "/1.0/disks/resize", s.resizeDisk},
		{"POST", "/1.0/disks/convert", s.convertDisk},
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
		{"GET", "/1.0/operations/{id}/session", s.session},
		{"POST", "/1.0/vms/{name}/nics", s.addNIC},
		{"DELETE", "/1.0/vms/{name}/nics/{nic}", s.removeNIC},
		{"POST", "/1.0/vms/{name}/disks", s.addDisk},
		{"DELETE", "/1.0/vms/{name}/disks/{disk}", s.removeDisk},
		{"GET", "/1.0/switches", s.listSwitches},
		{"POST", "/1.0/switches", s.createSwitch},
		{"GET", "/1.0/switches/{name}", s.getSwitch},
		{"DELETE", "/1.0/switches/{name}", s.deleteSwitch},
		{"GET", "/1.0/vms/{name}/checkpoints", s.listCheckpoints},
		{"POST", "/1.0/vms/{name}/checkpoints", s.createCheckpoint},
		{"GET", "/1.0/vms/{name}/checkpoints/{checkpoint}", s.getCheckpoint},
		{"PATCH", "/1.0/vms/{name}/checkpoints/{checkpoint}", s.renameCheckpoint},
		{"DELETE", "/1.0/vms/{name}/checkpoints/{checkpoint}", s.deleteCheckpoint},
		{"POST", "/1.0/vms/{name}/checkpoints/{checkpoint}/apply", s.applyCheckpoint},
		{"POST", "/1.0/vms/{name}/export", s.exportVM},
		{"POST", "/1.0/imports", s.importVM},
		{"POST", "/1.0/vms/{name}/backups", s.createBackup},
		{"GET", "/1.0/vms/{name}/backups", s.listBackups},
		{"GET", "/1.0/vms/{name}/backups/{backup}", s.getBackup},
		{"DELETE", "/1.0/vms/{name}/backups/{backup}", s.abortBackup},
		{"POST", "/1.0/vms/{name}/backups/{backup}/finish", s.finishBackup},
		{"GET", "/1.0/vms/{name}/backups/{backup}/disks/{disk}/changes", s.backupChanges},
		{"GET", "/1.0/vms/{name}/backups/{backup}/files", s.listBackupFiles},
		{"GET", "/1.0/vms/{name}/backups/{backup}/files/{file}", s.getBackupFile},
		{"GET", "/1.0/vms/{name}/tracking", s.getTracking},
		{"DELETE", "/1.0/vms/{name}/tracking/{reference}", s.deleteReferencePoint},
	}
}

// HTTPServer returns an http.Server for s with its timeouts. It has no
// WriteTimeout: ServeHTTP gives each write its own deadline instead, and the
// routes that stream their request body lift ReadTimeout (streamedBody).
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.Timeouts.Header,
		ReadTimeout:       s.Timeouts.Read,
		IdleTimeout:       s.Timeouts.Idle,
		MaxHeaderBytes:    maxHeaderBytes,
	}
}

// ServeHTTP logs each request and serves it, bounding its body (see
// requestBody) and giving each write of the answer a deadline (see
// statusRecorder). A hijacked connection (console, exec session) has no
// deadline: net/http clears them at the hijack, and a console may rightly
// stay idle for hours.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rc := http.NewResponseController(w)
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK, rc: rc, timeout: s.Timeouts.Write}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = newRequestBody(w, rc, r.Body, s.Timeouts.Read)
	}
	s.mux.ServeHTTP(rec, r)
	s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "code", rec.code, "duration", time.Since(start))
}

// statusRecorder records the answer's code, and gives each write its own
// deadline: a client that stops reading is cut off after Timeouts.Write,
// while a stream that moves (events, a download) goes on for as long as it
// lasts, and an answer that waits (?wait=) has no deadline before it starts.
type statusRecorder struct {
	http.ResponseWriter
	code    int
	rc      *http.ResponseController
	timeout time.Duration
}

func (r *statusRecorder) extend() {
	if r.timeout > 0 && r.rc != nil {
		_ = r.rc.SetWriteDeadline(time.Now().Add(r.timeout))
	}
}

func (r *statusRecorder) WriteHeader(code int) {
	r.extend()
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(p []byte) (int, error) {
	r.extend()
	return r.ResponseWriter.Write(p)
}

// Flush lets the event stream push each line at once.
func (r *statusRecorder) Flush() {
	r.extend()
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection (console hijack).
func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (s *Server) getRoot(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"api_version": api.Version, "openapi": "/1.0/openapi.yaml"})
}

func (s *Server) getOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(api.OpenAPI)
}

func (s *Server) getHost(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.host.Info())
}

func (s *Server) refreshHost(w http.ResponseWriter, r *http.Request) {
	h, err := s.host.RefreshHost(r.Context())
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

// accepted answers 202 with the operation and its URL.
func accepted(w http.ResponseWriter, op *operation.Op) {
	w.Header().Set("Location", "/1.0/operations/"+op.ID())
	writeJSON(w, http.StatusAccepted, op.Snapshot())
}
