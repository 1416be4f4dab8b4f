package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/client"
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

// newSavedVMServer serves a savedVM as its VMs role, and nothing else, on
// TCP or, when sock is not "", on that unix socket (as hvd does, for the client).
func newSavedVMServer(t *testing.T, sock string) *httptest.Server {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	bus := events.NewBus(log)
	ops := operation.NewManager(bus, StatusCode)
	srv := httptest.NewUnstartedServer(New(Roles{VMs: &savedVM{ops: ops}}, ops, bus, log))
	if sock != "" {
		ln, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		srv.Listener = ln
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// A role's hint reaches the JSON of the answer and of a failed operation,
// in its own field: the message reads whole without it.
func TestHintReachesTheJSON(t *testing.T) {
	srv := newSavedVMServer(t, "")
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

// A role's hint and kind reach a caller of the Go client, as they will
// reach a host calling another: errors.Is tells the kind, errdefs.Hint
// gives the advice, and the message is hvd's alone.
func TestHintAndKindReachTheClient(t *testing.T) {
	dir, err := os.MkdirTemp("", "hvh") // short: sun_path holds 108 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s")
	newSavedVMServer(t, sock)
	c := client.New(sock)
	ctx := context.Background()

	mem := "2G"
	_, err = c.UpdateVM(ctx, "web", api.VMUpdate{Memory: &mem})
	if !errors.Is(err, errdefs.ErrConflict) || errdefs.Hint(err) != savedHint ||
		err.Error() != "memory: cannot change VM web's while it is Saved" {
		t.Fatalf("UpdateVM: %v (hint %q); want a conflict with the message and the hint apart", err, errdefs.Hint(err))
	}

	op, err := c.ChangeState(ctx, "web", api.VMStatePut{Action: api.ActionStop})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.WaitOperation(ctx, op.ID, nil)
	if !errors.Is(err, errdefs.ErrTimeout) || errdefs.Hint(err) != stopHint || err.Error() != "VM web did not stop within 1s" {
		t.Fatalf("failed stop: %v (hint %q); want a timeout with its hint", err, errdefs.Hint(err))
	}

	// A role this server lacks: 501, of no kind, naming the role.
	_, err = c.HostInfo(ctx)
	var ce *client.Error
	if !errors.As(err, &ce) || ce.StatusCode != 501 || !strings.Contains(ce.Message, "role Host") || errdefs.Hint(err) != "" {
		t.Fatalf("HostInfo from a server without the Host role: %v", err)
	}
	for _, k := range []error{errdefs.ErrNotFound, errdefs.ErrConflict, errdefs.ErrInvalid, errdefs.ErrUnavailable, errdefs.ErrTimeout, errdefs.ErrCanceled, errdefs.ErrForbidden} {
		if errors.Is(err, k) {
			t.Errorf("501 reads as %q", k)
		}
	}
}
