package integration

import (
	"context"
	"errors"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/hostvm/hostvmtest"
	"github.com/hvproject/hv/internal/machine"
	"github.com/hvproject/hv/internal/vmconfig"
)

// guestView is what the guest services read of a fake VM.
type guestView struct{ v *hostvmtest.VM }

func (g guestView) Name() string  { return g.v.Name() }
func (g guestView) Running() bool { return g.v.State() == api.StateRunning }
func (g guestView) Enabled(s string) bool {
	cfg := g.v.Config()
	return cfg.ServiceEnabled(s)
}
func (g guestView) KVP() map[string]string { return maps.Clone(g.v.Config().KVP) }

// newVM is VM web in state, with guest services (no agent: nothing answers
// inside), and a QEMU when it runs.
func newVM(t *testing.T, state string) *hostvmtest.VM {
	t.Helper()
	cfg := vmconfig.Config{Name: "web", ID: vmconfig.NewID(), Generation: 1, CPUs: 1,
		MemoryBytes: 128 << 20, MaxMemoryBytes: 128 << 20, CreatedAt: time.Now().UTC(), Disks: []vmconfig.Disk{}}
	v, err := hostvmtest.NewVM(t.TempDir(), cfg, state)
	if err != nil {
		t.Fatal(err)
	}
	v.G = guest.New(guest.Options{VM: guestView{v}})
	if state == api.StateRunning {
		v.Sess = hostvmtest.NewDeviceSession(hostvmtest.NewDeviceMachine(machine.Memory{}))
	}
	return v
}

func newService(t *testing.T, v *hostvmtest.VM) (*Service, *hostvmtest.Host) {
	h := hostvmtest.NewHost(v)
	return New(h), h
}

// A service turned off, or a VM that does not run, is refused with a
// conflict that says which, before anything reaches the guest.
func TestServicesNeedThemOnAndTheVMRunning(t *testing.T) {
	ctx := context.Background()
	off := newVM(t, api.StateOff)
	f, _ := newService(t, off)
	if _, err := f.TimeSync(ctx, "web"); !errors.Is(err, errdefs.ErrConflict) || !strings.Contains(err.Error(), "is Off; the time-sync service needs it Running") {
		t.Errorf("time sync of a VM that is off: %v", err)
	}
	if _, err := f.Thaw(ctx, "web"); !errors.Is(err, errdefs.ErrConflict) {
		t.Errorf("thaw of a VM that is off: %v", err)
	}
	running := newVM(t, api.StateRunning)
	f, _ = newService(t, running)
	if _, err := f.UpdateIntegration(ctx, "web", api.IntegrationUpdate{Disable: []string{api.ServiceGuestServices}}); err != nil {
		t.Fatal(err)
	}
	_, err := f.ReadGuestFile(ctx, "web", "/etc/hostname", nil, nil)
	if !errors.Is(err, errdefs.ErrConflict) || errdefs.Hint(err) == "" || !strings.Contains(err.Error(), "is disabled") {
		t.Errorf("a file of a guest whose service is off: %v (hint %q)", err, errdefs.Hint(err))
	}
	if _, err := f.FreezeStatus(ctx, "ghost"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("an unknown VM: %v", err)
	}
}

// A command's request is checked, and so is the VM's state, before an
// operation starts.
func TestExecChecks(t *testing.T) {
	v := newVM(t, api.StateRunning)
	f, h := newService(t, v)
	for _, c := range []struct {
		req  api.ExecRequest
		want string
	}{
		{api.ExecRequest{}, "command:"},
		{api.ExecRequest{Command: []string{""}}, "command:"},
		{api.ExecRequest{Command: []string{"env"}, Env: []string{"NOVALUE"}}, "env:"},
		{api.ExecRequest{Command: []string{"sleep"}, Timeout: -1}, "timeout:"},
	} {
		if _, err := f.ExecVM("web", c.req); !errors.Is(err, errdefs.ErrInvalid) || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an invalid-input error naming %s", c.req, err, c.want)
		}
	}
	refused := errors.New("cannot run a command in VM web: it is Paused")
	var asked string
	h.ActionFn = func(v hostvm.VM, action string) error { asked = action; return refused }
	if _, err := f.ExecVM("web", api.ExecRequest{Command: []string{"true"}}); !errors.Is(err, refused) || asked != "exec" {
		t.Errorf("exec the host refuses: %v (asked %q)", err, asked)
	}
	h.ActionFn = nil
	// No agent answers: the operation starts, and fails naming the command.
	op, err := f.ExecVM("web", api.ExecRequest{Command: []string{"true"}, Timeout: 1})
	if err != nil {
		t.Fatal(err)
	}
	<-op.Done()
	if snap := op.Snapshot(); snap.Status == api.OpSuccess || !strings.Contains(snap.Error, `"true"`) {
		t.Errorf("exec with no agent: %+v", snap)
	}
	if _, err := f.SessionConn(context.Background(), op.ID()); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("joining a session that is not one: %v", err)
	}
}

// A freeze is bounded by the guest services' maximum; the host's freeze
// guard does the freezing.
func TestFreezeChecksAndDelegates(t *testing.T) {
	ctx := context.Background()
	v := newVM(t, api.StateRunning)
	v.Frozen = api.FreezeStatus{Frozen: true, FileSystems: 2}
	f, _ := newService(t, v)
	max := int(guest.MaxFreeze.Seconds())
	for _, timeout := range []int{-1, max + 1} {
		if _, err := f.Freeze(ctx, "web", api.FreezeRequest{Timeout: timeout}); !errors.Is(err, errdefs.ErrInvalid) || !strings.HasPrefix(err.Error(), "timeout:") {
			t.Errorf("freeze for %ds: %v", timeout, err)
		}
	}
	st, err := f.Freeze(ctx, "web", api.FreezeRequest{Timeout: max})
	if err != nil || !st.Frozen || st.FileSystems != 2 {
		t.Fatalf("freeze: %+v %v", st, err)
	}
}

// Integration settings change in any state, durably, and unknown or
// contradictory names are refused.
func TestUpdateIntegration(t *testing.T) {
	ctx := context.Background()
	v := newVM(t, api.StateOff)
	f, _ := newService(t, v)
	for _, req := range []api.IntegrationUpdate{
		{Enable: []string{"vss"}},
		{Enable: []string{api.ServiceTimeSync}, Disable: []string{api.ServiceTimeSync}},
	} {
		if _, err := f.UpdateIntegration(ctx, "web", req); !errors.Is(err, errdefs.ErrInvalid) || !strings.HasPrefix(err.Error(), "service:") {
			t.Errorf("%+v: %v", req, err)
		}
	}
	if _, err := f.UpdateIntegration(ctx, "web", api.IntegrationUpdate{Disable: []string{api.ServiceTimeSync, api.ServiceBackup, api.ServiceTimeSync}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.UpdateIntegration(ctx, "web", api.IntegrationUpdate{Enable: []string{api.ServiceBackup}}); err != nil {
		t.Fatal(err)
	}
	disk, _, err := vmconfig.Load(v.Dir())
	if err != nil || strings.Join(disk.DisabledServices, ",") != api.ServiceTimeSync {
		t.Fatalf("disabled on disk: %v %v", disk.DisabledServices, err)
	}
	st, _ := f.Integration(ctx, "web")
	for _, s := range st {
		if s.Name == api.ServiceTimeSync && s.Enabled {
			t.Errorf("status: %+v", s)
		}
	}
	if ev := v.Events(); len(ev) != 2 || ev[1] != "updated: integration services changed" {
		t.Errorf("events: %q", ev)
	}
}

// Key-value pairs are stored durably whatever the state; the guest gets
// them when it can.
func TestKVP(t *testing.T) {
	ctx := context.Background()
	v := newVM(t, api.StateOff)
	f, _ := newService(t, v)
	if err := f.SetKVP(ctx, "web", "role", "db"); err != nil {
		t.Fatal(err)
	}
	if err := f.SetKVP(ctx, "web", "bad key", "x"); !errors.Is(err, errdefs.ErrInvalid) {
		t.Errorf("a bad key: %v", err)
	}
	if err := f.DeleteKVP(ctx, "web", "nope"); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("deleting a key that is not there: %v", err)
	}
	kvp, _, err := f.KVP(ctx, "web")
	if err != nil || kvp["role"] != "db" || len(kvp) != 1 {
		t.Fatalf("pairs: %v %v", kvp, err)
	}
	kvp["role"] = "changed by the caller"
	if disk, _, _ := vmconfig.Load(v.Dir()); disk.KVP["role"] != "db" || v.Config().KVP["role"] != "db" {
		t.Fatalf("pairs on disk %v, in memory %v", disk.KVP, v.Config().KVP)
	}
	if err := f.DeleteKVP(ctx, "web", "role"); err != nil {
		t.Fatal(err)
	}
	if disk, _, _ := vmconfig.Load(v.Dir()); len(disk.KVP) != 0 {
		t.Fatalf("pairs on disk after delete: %v", disk.KVP)
	}
}
