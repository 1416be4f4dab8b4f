// Package httpapi serves hv's REST API (version 1.0) over HTTP: it decodes
// requests, calls the host service and encodes answers. It holds no policy.
//
// The API is cut into roles (VMs, Guest, Devices, Disks, Switches,
// Checkpoints, Backups, Host), each an interface with its own routes in a
// file of its own, so that a server can serve some of them only (a test's
// fake, a future peer endpoint), and a new part of the API (a migration or
// replica target) is a new role rather than more methods on one interface.
package httpapi

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/operation"
)

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

	roles Roles
	ops   *operation.Manager
	bus   *events.Bus
	log   *slog.Logger
	mux   *http.ServeMux
}

// New wires the routes of the roles set in roles; the routes of a role left
// nil answer 501, naming it. Operations and events are served whatever the
// roles, since every role's long calls are operations.
func New(roles Roles, ops *operation.Manager, bus *events.Bus, log *slog.Logger) *Server {
	s := &Server{Timeouts: DefaultTimeouts(), roles: roles, ops: ops, bus: bus, log: log, mux: http.NewServeMux()}
	for _, p := range s.parts() {
		for _, r := range p.routes {
			h := r.handler
			if !p.served {
				h = notServed(p.role)
			}
			s.mux.HandleFunc(r.method+" "+r.path, h)
		}
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

// part is the routes of one role, or the core ones (role "").
type part struct {
	role   string
	served bool
	routes []route
}

// parts lists the API's routes by role. A new role (a peer API for
// migration, say) adds a line here, a field to Roles and a file of its own.
func (s *Server) parts() []part {
	r := s.roles
	return []part{
		{"", true, s.coreRoutes()},
		{"Host", r.Host != nil, s.hostRoutes()},
		{"VMs", r.VMs != nil, s.vmRoutes()},
		{"Guest", r.Guest != nil, s.guestRoutes()},
		{"Devices", r.Devices != nil, s.deviceRoutes()},
		{"Disks", r.Disks != nil, s.diskRoutes()},
		{"Switches", r.Switches != nil, s.switchRoutes()},
		{"Checkpoints", r.Checkpoints != nil, s.checkpointRoutes()},
		{"Transfers", r.Transfers != nil, s.transferRoutes()},
		{"Backups", r.Backups != nil, s.backupRoutes()},
		{"Moves", r.Moves != nil, s.moveRoutes()},
		{"Storage", r.Storage != nil, s.storageRoutes()},
		{"Migrations", r.Migrations != nil, s.migrationRoutes()},
		{"Trust", r.Trust != nil, s.trustRoutes()},
		{"Peers", r.Peers != nil, s.peerRoutes()},
	}
}

// routes is the API's table of contents, served or not; openapi.yaml
// documents each entry (a test checks that they agree).
func (s *Server) routes() []route {
	var out []route
	for _, p := range s.parts() {
		out = append(out, p.routes...)
	}
	return out
}

// coreRoutes serve the API's description, operations and events.
func (s *Server) coreRoutes() []route {
	return []route{
		{"GET", "/1.0", s.getRoot},
		{"GET", "/1.0/openapi.yaml", s.getOpenAPI},
		{"GET", "/1.0/operations", s.listOps},
		{"GET", "/1.0/operations/{id}", s.getOp},
		{"DELETE", "/1.0/operations/{id}", s.cancelOp},
		{"GET", "/1.0/events", s.events},
	}
}

// notServed answers the routes of a role this server was built without.
func notServed(role string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		writeError(w, fmt.Errorf("%s %s: %w (role %s)", r.Method, r.URL.Path, errNotServed, role))
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

// RemoteHTTPServer returns an http.Server for the network API (see Remote),
// with the same timeouts as HTTPServer and HTTP/1.1 only: consoles and exec
// sessions take over their connection, which HTTP/2 cannot do. The caller
// serves it on a TLS listener that asks for client certificates.
func (s *Server) RemoteHTTPServer(auth Authenticator) *http.Server {
	srv := s.HTTPServer()
	srv.Handler = s.Remote(auth)
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	return srv
}

// ServeHTTP logs each request and serves it, bounding its body (see
// requestBody) and giving each write of the answer a deadline (see
// statusRecorder). A hijacked connection (console, exec session) has no
// deadline: net/http clears them at the hijack, and a console may rightly
// stay idle for hours.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	code := s.serve(w, r)
	s.log.Debug("request", "method", r.Method, "path", r.URL.Path, "code", code, "duration", time.Since(start))
}

// serve serves r and returns the answer's code.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) int {
	rc := http.NewResponseController(w)
	rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK, rc: rc, timeout: s.Timeouts.Write}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = newRequestBody(w, rc, r.Body, s.Timeouts.Read)
	}
	s.mux.ServeHTTP(rec, r)
	return rec.code
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

// accepted answers 202 with the operation and its URL.
func accepted(w http.ResponseWriter, op *operation.Op) {
	w.Header().Set("Location", "/1.0/operations/"+op.ID())
	writeJSON(w, http.StatusAccepted, op.Snapshot())
}

// answer writes v, or the error.
func answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, v)
}
