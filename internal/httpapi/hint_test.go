package httpapi

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/events"
	"github.com/hvproject/hv/internal/operation"
)

// The advice of the hinted errors below.
const (
	savedHint = "start it and stop it (actions start, stop), or discard the saved state (action kill)"
	stopHint  = "force it off (field force) or give it longer (field timeout)"
)

// savedVM plays the VMs role only, for VM web, Saved: changing its settings
// is refused at once, and a stop fails as an operation; both with a hint.
type savedVM struct {
	VMs // the rest panics: the tests below do not reach it
	ops *operation.Manager
}

func (f *savedVM) UpdateVM(ctx context.Context, name string, req api.VMUpdate) (api.VM, error) {
	return api.VM{}, errdefs.WithHint(fmt.Errorf("memory: cannot change VM %s's while it is Saved: %w", name, errdefs.ErrConflict), savedHint)
}

func (f *savedVM) ChangeState(name string, req api.VMStatePut) (*operation.Op, error) {
	return f.ops.Start("vm."+req.Action, []string{"/1.0/vms/" + name}, func(ctx context.Context, op *operation.Op) (any, error) {
		return nil, errdefs.WithHint(fmt.Errorf("VM %s did not stop within 1s: %w", name, errdefs.ErrTimeout), stopHint)
	}), nil
}

// newSavedVMServer serves a savedVM as its VMs role, and nothing else.
func newSavedVMServer(t *testing.T) (*httptest.Server, *Server) {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	bus := events.NewBus(log)
	ops := operation.NewManager(bus, StatusCode)
	s := New(Roles{VMs: &savedVM{ops: ops}}, ops, bus, log)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv, s
}

// A role's hint reaches the JSON of the answer and of a failed operation,
// in its own field: the message reads whole without it.
func TestHintReachesTheJSON(t *testing.T) {
	srv, _ := newSavedVMServer(t)
	code, body := do(t, "PATCH", srv.URL+"/1.0/vms/web", `{"memory":"2G"}`)
	var e api.Error
	if err := json.Unmarshal([]byte(body), &e); err != nil || code != 409 || e.Code != 409 ||
		e.Error != "memory: cannot change VM web's while it is Saved" || e.Hint != savedHint {
		t.Fatalf("PATCH: %d %s; want 409 with the message and the hint apart", code, body)
	}

	code, body = do(t, "PUT", srv.URL+"/1.0/vms/web/state", `{"action":"stop"}`)
	var op api.Operation
	if err := json.Unmarshal([]byte(body), &op); err != nil || code != 202 {
		t.Fatalf("PUT state: %d %s", code, body)
	}
	_, body = do(t, "GET", srv.URL+"/1.0/operations/"+op.ID+"?wait=10s", "")
	if err := json.Unmarshal([]byte(body), &op); err != nil || op.Status != api.OpFailure || op.ErrorCode != 504 ||
		op.ErrorHint != stopHint || strings.Contains(op.Error, stopHint) {
		t.Fatalf("failed operation: %s; want code 504 and the hint in error_hint", body)
	}

	// An error without advice has no hint field at all.
	_, body = do(t, "GET", srv.URL+"/1.0/host", "")
	if strings.Contains(body, `"hint"`) {
		t.Fatalf("an error without a hint: %s", body)
	}
}
