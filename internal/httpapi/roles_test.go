package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/operation"
)

// newRoleServer serves roles alone, as a peer endpoint or a test would.
func newRoleServer(t *testing.T, roles Roles) *httptest.Server {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	bus := events.NewBus(log)
	srv := httptest.NewServer(New(roles, operation.NewManager(bus, StatusCode), bus, log))
	t.Cleanup(srv.Close)
	return srv
}

// switchesOnly plays the Switches role and nothing else.
type switchesOnly struct {
	mu       sync.Mutex
	switches map[string]api.Switch
}

func (f *switchesOnly) ListSwitches() []api.Switch {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []api.Switch{}
	for _, s := range f.switches {
		out = append(out, s)
	}
	return out
}

func (f *switchesOnly) GetSwitch(name string) (api.Switch, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.switches[name]
	if !ok {
		return api.Switch{}, fmt.Errorf("switch %q: %w", name, errdefs.ErrNotFound)
	}
	return s, nil
}

func (f *switchesOnly) CreateSwitch(ctx context.Context, req api.SwitchCreate) (api.Switch, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := api.Switch{Name: req.Name, Type: req.Type}
	f.switches[req.Name] = s
	return s, nil
}

func (f *switchesOnly) DeleteSwitch(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.switches, name)
	return nil
}

// A fake of one role is enough to test that role's handlers; the routes of
// the roles left out answer 501 naming their role, and the core routes
// (API description, operations, events) are served whatever the roles.
func TestServerOfOneRole(t *testing.T) {
	srv := newRoleServer(t, Roles{Switches: &switchesOnly{switches: map[string]api.Switch{}}})
	if code, body := do(t, "POST", srv.URL+"/1.0/switches", `{"name":"lan","type":"private"}`); code != 200 {
		t.Fatalf("create switch: %d %s", code, body)
	}
	code, body := do(t, "GET", srv.URL+"/1.0/switches/lan", "")
	var sw api.Switch
	if err := json.Unmarshal([]byte(body), &sw); code != 200 || err != nil || sw.Name != "lan" {
		t.Fatalf("get switch: %d %s", code, body)
	}
	if code, _ := do(t, "GET", srv.URL+"/1.0/switches/wan", ""); code != 404 {
		t.Fatalf("unknown switch: %d", code)
	}
	for _, c := range []struct{ method, path, role string }{
		{"GET", "/1.0/vms", "VMs"},
		{"GET", "/1.0/host", "Host"},
		{"POST", "/1.0/vms/web/exec", "Guest"},
		{"GET", "/1.0/operations/x/session", "Guest"},
		{"POST", "/1.0/vms/web/nics", "Devices"},
		{"GET", "/1.0/disks/info", "Disks"},
		{"POST", "/1.0/vms/web/checkpoints", "Checkpoints"},
		{"POST", "/1.0/imports", "Transfers"},
		{"GET", "/1.0/vms/web/tracking", "Backups"},
	} {
		code, body := do(t, c.method, srv.URL+c.path, "")
		var e api.Error
		if err := json.Unmarshal([]byte(body), &e); err != nil || code != 501 || e.Code != 501 ||
			!strings.Contains(e.Error, "role "+c.role) || !strings.Contains(e.Error, c.path) {
			t.Errorf("%s %s without the %s role: %d %s; want 501 naming the path and the role", c.method, c.path, c.role, code, body)
		}
	}
	for _, path := range []string{"/1.0", "/1.0/openapi.yaml", "/1.0/operations"} {
		if code, body := do(t, "GET", srv.URL+path, ""); code != 200 {
			t.Errorf("GET %s: %d %s", path, code, body)
		}
	}
}

// Each route belongs to exactly one part: New would panic on a pattern
// given twice, and a role's routes must not hide behind another's.
func TestRoutesBelongToOneRole(t *testing.T) {
	seen := map[string]string{}
	for _, p := range (&Server{}).parts() {
		if len(p.routes) == 0 {
			t.Errorf("role %q has no routes", p.role)
		}
		for _, r := range p.routes {
			key := r.method + " " + r.path
			if prev, dup := seen[key]; dup {
				t.Errorf("%s is in both %q and %q", key, prev, p.role)
			}
			seen[key] = p.role
		}
	}
}
