package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/operation"
)

// fakeHost answers like the host service would, without QEMU, in the roles
// it is wired as (roles); the others are not served.
type fakeHost struct {
	// Methods a test does not use panic: a test never relies on them silently.
	Host
	VMs
	Guest
	Disks
	Checkpoints
	Transfers

	ops      *operation.Manager
	created  []api.VMCreate
	console  net.Conn
	release  chan struct{}
	lastExec api.ExecRequest
	// The checkpoint, export and import calls that reached the host (checkpoints_test.go).
	cpMu    sync.Mutex
	cpCalls []string
}

func (f *fakeHost) Info() api.HostInfo { return api.HostInfo{Version: "test", Accelerator: "tcg"} }
func (f *fakeHost) ListVMs() []api.VM  { return []api.VM{{Name: "web", State: api.StateRunning}} }
func (f *fakeHost) GetVM(ctx context.Context, name string) (api.VM, error) {
	if name != "web" {
		return api.VM{}, fmt.Errorf("VM %q: %w", name, errdefs.ErrNotFound)
	}
	return api.VM{Name: "web", State: api.StateRunning}, nil
}
func (f *fakeHost) CreateVM(ctx context.Context, req api.VMCreate) (*operation.Op, error) {
	f.created = append(f.created, req)
	return f.ops.Start("vm.create", []string{"/1.0/vms/" + req.Name}, func(ctx context.Context, op *operation.Op) (any, error) {
		op.SetProgress("copying image", 50, 100, "percent")
		<-f.release
		return nil, nil
	}), nil
}
func (f *fakeHost) UpdateVM(ctx context.Context, name string, req api.VMUpdate) (api.VM, error) {
	return api.VM{}, fmt.Errorf("cannot change the settings of VM web: it is Running: %w", errdefs.ErrConflict)
}
func (f *fakeHost) DeleteVM(name string) (*operation.Op, error) { return nil, errdefs.ErrNotFound }
func (f *fakeHost) ChangeState(name string, req api.VMStatePut) (*operation.Op, error) {
	return nil, fmt.Errorf("cannot start VM web: it is Running: %w", errdefs.ErrConflict)
}
func (f *fakeHost) ExecVM(name string, req api.ExecRequest) (*operation.Op, error) {
	f.lastExec = req
	return f.ops.Start("vm.exec", nil, func(ctx context.Context, op *operation.Op) (any, error) {
		return api.ExecResult{ExitCode: 3, Stdout: []byte("out")}, nil
	}), nil
}
func (f *fakeHost) ConsoleDial(ctx context.Context, name string) (net.Conn, error) {
	return f.console, nil
}
func (f *fakeHost) ConsoleLogPath(name string) (string, error) { return "/nonexistent", nil }
func (f *fakeHost) CreateDisk(ctx context.Context, req api.DiskCreate) (api.DiskInfo, error) {
	return api.DiskInfo{Path: req.Path}, nil
}
func (f *fakeHost) DiskInfo(ctx context.Context, path string) (api.DiskInfo, error) {
	return api.DiskInfo{}, fmt.Errorf("path: %w", errdefs.ErrInvalid)
}
func (f *fakeHost) ResizeDisk(ctx context.Context, req api.DiskResize) (api.DiskInfo, error) {
	return api.DiskInfo{}, nil
}
func (f *fakeHost) ConvertDisk(ctx context.Context, req api.DiskConvert) (*operation.Op, error) {
	return nil, errdefs.ErrUnavailable
}

// fakeRoles wires f as the roles fakeHost plays.
func fakeRoles(f interface {
	Host
	VMs
	Guest
	Disks
	Checkpoints
	Transfers
}) Roles {
	return Roles{Host: f, VMs: f, Guest: f, Disks: f, Checkpoints: f, Transfers: f}
}

func newTestServer(t *testing.T) (*httptest.Server, *fakeHost, *events.Bus) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	bus := events.NewBus(log)
	ops := operation.NewManager(bus, StatusCode)
	f := &fakeHost{ops: ops, release: make(chan struct{})}
	srv := httptest.NewServer(New(fakeRoles(f), ops, bus, log))
	t.Cleanup(func() { close(f.release); srv.Close() })
	return srv, f, bus
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestBodyErrorsNameTheField(t *testing.T) {
	srv, f, _ := newTestServer(t)
	cases := []struct{ body, want string }{
		{`{"name":"a","memroy":"1G"}`, `unknown field "memroy"`},
		{`{"name":"a","cpus":"two"}`, `cpus: expected int`},
		{``, `body: empty`},
		{`{"name":`, `invalid JSON`},
		{`{"name":"a"} {"name":"b"}`, `more than one JSON value`},
	}
	for _, c := range cases {
		code, body := do(t, "POST", srv.URL+"/1.0/vms", c.body)
		var e api.Error
		json.Unmarshal([]byte(body), &e)
		if code != 400 || e.Code != 400 || !strings.Contains(e.Error, c.want) {
			t.Errorf("body %q: %d %s; want 400 containing %q", c.body, code, body, c.want)
		}
	}
	if len(f.created) != 0 {
		t.Fatalf("bad bodies reached the host: %+v", f.created)
	}
}

func TestErrorKindsMapToCodes(t *testing.T) {
	srv, _, _ := newTestServer(t)
	if code, body := do(t, "GET", srv.URL+"/1.0/vms/ghost", ""); code != 404 || !strings.Contains(body, `"code": 404`) {
		t.Errorf("unknown VM: %d %s", code, body)
	}
	if code, body := do(t, "PUT", srv.URL+"/1.0/vms/web/state", `{"action":"start"}`); code != 409 || !strings.Contains(body, "it is Running") {
		t.Errorf("conflict: %d %s", code, body)
	}
	if code, body := do(t, "PUT", srv.URL+"/1.0/vms/web/state", `{}`); code != 400 || !strings.Contains(body, "action: missing") {
		t.Errorf("missing action: %d %s", code, body)
	}
	if code, _ := do(t, "POST", srv.URL+"/1.0/disks/convert", `{"source":"/a","target":"/b"}`); code != 503 {
		t.Errorf("unavailable: %d", code)
	}
	if code, body := do(t, "GET", srv.URL+"/1.0/nope", ""); code != 404 || !strings.Contains(body, "openapi") {
		t.Errorf("unknown path: %d %s", code, body)
	}
	if code, _ := do(t, "GET", srv.URL+"/1.0/operations/x?wait=soon", ""); code != 400 {
		t.Errorf("bad wait: %d", code)
	}
}

func TestOperationLifecycle(t *testing.T) {
	srv, f, _ := newTestServer(t)
	code, body := do(t, "POST", srv.URL+"/1.0/vms", `{"name":"web","image":"/x.qcow2"}`)
	if code != 202 {
		t.Fatalf("create: %d %s", code, body)
	}
	var op api.Operation
	json.Unmarshal([]byte(body), &op)
	if op.ID == "" || op.Kind != "vm.create" || op.Resources[0] != "/1.0/vms/web" {
		t.Fatalf("operation: %+v", op)
	}
	// A short wait returns the running operation with its progress.
	start := time.Now()
	_, body = do(t, "GET", srv.URL+"/1.0/operations/"+op.ID+"?wait=100ms", "")
	json.Unmarshal([]byte(body), &op)
	if op.Status != api.OpRunning || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("waited op: %+v after %s", op, time.Since(start))
	}
	// Cancel ends it; the work sees the cancel only at its next step here, so let it go.
	go func() { f.release <- struct{}{} }()
	_, body = do(t, "GET", srv.URL+"/1.0/operations/"+op.ID+"?wait=10s", "")
	json.Unmarshal([]byte(body), &op)
	if op.Status != api.OpSuccess {
		t.Fatalf("finished op: %+v", op)
	}
	code, body = do(t, "DELETE", srv.URL+"/1.0/operations/"+op.ID, "")
	if code != 409 {
		t.Fatalf("cancel of a finished op: %d %s", code, body)
	}
	code, body = do(t, "POST", srv.URL+"/1.0/vms/web/exec", `{"command":["true"],"stdin":"aGk="}`)
	json.Unmarshal([]byte(body), &op)
	if code != 202 || string(f.lastExec.Stdin) != "hi" {
		t.Fatalf("exec: %d %s stdin=%q", code, body, f.lastExec.Stdin)
	}
	_, body = do(t, "GET", srv.URL+"/1.0/operations/"+op.ID+"?wait=10s", "")
	if !strings.Contains(body, `"exit_code": 3`) || !strings.Contains(body, `"stdout": "b3V0"`) {
		t.Fatalf("exec result: %s", body)
	}
}

func TestEventStream(t *testing.T) {
	srv, _, bus := newTestServer(t)
	resp, err := http.Get(srv.URL + "/1.0/events?type=vm")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	bus.Publish(api.Event{Type: "operation", Action: "created"})
	bus.Publish(api.Event{Type: "vm", Action: "state-changed", Resource: "/1.0/vms/web"})
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var ev api.Event
	if err := json.Unmarshal([]byte(line), &ev); err != nil || ev.Type != "vm" || ev.Action != "state-changed" {
		t.Fatalf("event line %q: %+v %v", line, ev, err)
	}
	if code, _ := do(t, "GET", srv.URL+"/1.0/events?type=bogus", ""); code != 400 {
		t.Fatalf("bad type: %d", code)
	}
}

func TestConsoleUpgradeCarriesBytes(t *testing.T) {
	srv, f, _ := newTestServer(t)
	guestSide, hostSide := net.Pipe()
	f.console = hostSide
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /1.0/vms/web/console HTTP/1.1\r\nHost: hv\r\nConnection: Upgrade\r\nUpgrade: hv-console\r\n\r\nls\n")
	br := bufio.NewReader(c)
	status, _ := br.ReadString('\n')
	if !strings.Contains(status, "101") {
		t.Fatalf("status line %q", status)
	}
	for {
		l, _ := br.ReadString('\n')
		if l == "\r\n" || l == "" {
			break
		}
	}
	got := make([]byte, 3)
	if _, err := io.ReadFull(guestSide, got); err != nil || string(got) != "ls\n" {
		t.Fatalf("guest got %q %v", got, err)
	}
	go guestSide.Write([]byte("file\n"))
	line, _ := br.ReadString('\n')
	if line != "file\n" {
		t.Fatalf("client got %q", line)
	}
	if code, _ := do(t, "GET", srv.URL+"/1.0/vms/web/console", ""); code != 400 {
		t.Fatalf("console without upgrade: %d", code)
	}
}

func TestStatusCodeMapping(t *testing.T) {
	for err, want := range map[error]int{
		nil: 200, errdefs.ErrNotFound: 404, errdefs.ErrConflict: 409, errdefs.ErrInvalid: 400,
		errdefs.ErrTimeout: 504, errdefs.ErrUnavailable: 503, errdefs.ErrCanceled: 499, errdefs.ErrForbidden: 403,
		context.DeadlineExceeded: 504, fmt.Errorf("x: %w", errdefs.ErrNotFound): 404, io.EOF: 500,
	} {
		if got := StatusCode(err); got != want {
			t.Errorf("StatusCode(%v) = %d, want %d", err, got, want)
		}
	}
}
