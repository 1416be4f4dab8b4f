package clitest

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
)

// FakeHVD is a scripted hvd on a unix socket: VMs in memory, and operations that step
// through a list of states, one per GET, so progress and failures can be staged.
type FakeHVD struct {
	t      *testing.T
	Socket string

	Mu       sync.Mutex
	VMs      map[string]api.VM
	ops      map[string][]api.Operation // remaining states; the last one repeats
	nextID   int
	Requests []string // "METHOD path" of every call, for assertions
	bodies   map[string][]byte
	// createSteps scripts the operation of the next POST /1.0/vms.
	CreateSteps []api.Operation
	// execResult answers POST exec.
	ExecResult api.ExecResult
	Events     []api.Event

	// The routes of fakehvd_guest.go.
	Integration map[string]api.IntegrationService
	KVP         map[string]string
	Guest       *api.GuestInfo
	frozen      api.FreezeStatus
	Files       map[string][]byte // guest files by path
	Modes       map[string]string
	CutAfter    int  // downloads break off after this many bytes
	BadSum      bool // downloads carry a wrong checksum
	Switches    map[string]api.Switch
	SessionExit int // exit code of an interactive exec

	// The routes of fakehvd_checkpoint.go.
	Checkpoints  map[string][]api.Checkpoint // by VM, parents before children
	CannotFreeze string                      // production falls back to standard, saying this
	Queries      map[string]string           // raw query of the last call, by "METHOD path"
}

// NewFakeHVD serves vms on a fresh unix socket until the test ends.
func NewFakeHVD(t *testing.T, vms ...api.VM) *FakeHVD {
	t.Helper()
	f := &FakeHVD{t: t, VMs: map[string]api.VM{}, ops: map[string][]api.Operation{}, bodies: map[string][]byte{},
		Integration: map[string]api.IntegrationService{}, KVP: map[string]string{}, Files: map[string][]byte{},
		Modes: map[string]string{}, Switches: map[string]api.Switch{},
		Checkpoints: map[string][]api.Checkpoint{}, Queries: map[string]string{}}
	for _, v := range vms {
		f.VMs[v.Name] = v
	}
	dir, err := os.MkdirTemp("", "hvt") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f.Socket = filepath.Join(dir, "hvd.sock")
	ln, err := net.Listen("unix", f.Socket)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(f.routes())
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func (f *FakeHVD) routes() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /1.0/host", func(w http.ResponseWriter, r *http.Request) {
		reply(w, 200, api.HostInfo{Version: "0.1.0", APIVersion: "1.0", Hostname: "h1", Accelerator: "tcg"})
	})
	m.HandleFunc("GET /1.0/vms", func(w http.ResponseWriter, r *http.Request) {
		f.Mu.Lock()
		defer f.Mu.Unlock()
		out := []api.VM{}
		for _, v := range f.VMs {
			out = append(out, v)
		}
		reply(w, 200, out)
	})
	m.HandleFunc("GET /1.0/vms/{name}", func(w http.ResponseWriter, r *http.Request) {
		if v, ok := f.vm(w, r); ok {
			reply(w, 200, v)
		}
	})
	m.HandleFunc("POST /1.0/vms", func(w http.ResponseWriter, r *http.Request) {
		var req api.VMCreate
		f.decode(r, &req)
		f.Mu.Lock()
		f.VMs[req.Name] = api.VM{Name: req.Name, State: api.StateOff, Generation: 2, CPUs: req.CPUs}
		steps := f.CreateSteps
		f.Mu.Unlock()
		reply(w, 202, f.startOp("vm.create", steps...))
	})
	f.vmActionRoutes(m)
	m.HandleFunc("GET /1.0/operations/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.record(r)
		f.Mu.Lock()
		defer f.Mu.Unlock()
		steps, ok := f.ops[r.PathValue("id")]
		if !ok {
			reply(w, 404, api.Error{Error: "operation not found", Code: 404})
			return
		}
		op := steps[0]
		if len(steps) > 1 {
			f.ops[op.ID] = steps[1:]
		}
		reply(w, 200, op)
	})
	m.HandleFunc("GET /1.0/events", func(w http.ResponseWriter, r *http.Request) {
		f.record(r)
		w.WriteHeader(200)
		for _, e := range f.Events {
			b, _ := json.Marshal(e)
			fmt.Fprintf(w, "%s\n", b)
		}
	})
	f.guestRoutes(m)
	f.checkpointRoutes(m)
	m.HandleFunc("POST /1.0/disks", func(w http.ResponseWriter, r *http.Request) {
		var req api.DiskCreate
		f.decode(r, &req)
		reply(w, 200, api.DiskInfo{Path: req.Path, Format: req.Format, VirtualBytes: 10 << 30, ActualBytes: 196 << 10})
	})
	return m
}

// vm finds the VM of the request's path, or answers 404 as hvd does.
func (f *FakeHVD) vm(w http.ResponseWriter, r *http.Request) (api.VM, bool) {
	f.record(r)
	f.Mu.Lock()
	defer f.Mu.Unlock()
	name := r.PathValue("name")
	v, ok := f.VMs[name]
	if !ok {
		reply(w, 404, api.Error{Error: fmt.Sprintf("VM %q not found; see hv vm list", name), Code: 404})
	}
	return v, ok
}

// startOp registers an operation stepping through steps (ids and kinds filled in) and
// returns its first, pending, state.
func (f *FakeHVD) startOp(kind string, steps ...api.Operation) api.Operation {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.nextID++
	id := fmt.Sprintf("op%d", f.nextID)
	if len(steps) == 0 {
		steps = []api.Operation{{Status: api.OpSuccess}}
	}
	for i := range steps {
		steps[i].ID, steps[i].Kind = id, kind
	}
	f.ops[id] = steps
	return api.Operation{ID: id, Kind: kind, Status: api.OpPending, CreatedAt: time.Now()}
}

func (f *FakeHVD) record(r *http.Request) {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	f.Requests = append(f.Requests, r.Method+" "+r.URL.Path)
}

func (f *FakeHVD) decode(r *http.Request, v any) {
	b, _ := io.ReadAll(r.Body)
	f.Mu.Lock()
	f.bodies[r.Method+" "+r.URL.Path] = b
	f.Mu.Unlock()
	if err := json.Unmarshal(b, v); err != nil {
		f.t.Errorf("%s %s: bad body %q: %v", r.Method, r.URL.Path, b, err)
	}
}

func (f *FakeHVD) Body(key string) string {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	return string(f.bodies[key])
}

func (f *FakeHVD) Saw(prefix string) bool {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	for _, r := range f.Requests {
		if strings.HasPrefix(r, prefix) {
			return true
		}
	}
	return false
}

// console greets, then echoes each line upper-cased, like a tiny guest.
func (f *FakeHVD) console(w http.ResponseWriter, r *http.Request) {
	if _, ok := f.vm(w, r); !ok {
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		f.t.Error(err)
		return
	}
	defer conn.Close()
	io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: hv-console\r\n\r\nlogin: ")
	for {
		line, err := brw.ReadString('\n')
		if err != nil {
			return
		}
		time.Sleep(50 * time.Millisecond) // the guest takes a moment to answer
		io.WriteString(conn, strings.ToUpper(line))
	}
}

func reply(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// vmActionRoutes serves the state changes, exec and the console.
func (f *FakeHVD) vmActionRoutes(m *http.ServeMux) {
	m.HandleFunc("PUT /1.0/vms/{name}/state", func(w http.ResponseWriter, r *http.Request) {
		var put api.VMStatePut
		f.decode(r, &put)
		v, ok := f.vm(w, r)
		if !ok {
			return
		}
		if put.Action == api.ActionStart && v.State != api.StateOff {
			reply(w, 409, api.Error{Error: "cannot start VM " + v.Name + ": it is " + v.State, Code: 409})
			return
		}
		reply(w, 202, f.startOp("vm."+put.Action, api.Operation{Status: api.OpSuccess}))
	})
	m.HandleFunc("POST /1.0/vms/{name}/exec", func(w http.ResponseWriter, r *http.Request) {
		var req api.ExecRequest
		f.decode(r, &req)
		if _, ok := f.vm(w, r); !ok {
			return
		}
		f.Mu.Lock()
		res := f.ExecResult
		f.Mu.Unlock()
		reply(w, 202, f.startOp("vm.exec", api.Operation{Status: api.OpRunning}, api.Operation{Status: api.OpSuccess, Result: res}))
	})
	m.HandleFunc("GET /1.0/vms/{name}/console", f.console)
}
