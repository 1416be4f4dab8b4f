// Package hostvmtest has fakes of the host service's contract (hostvm.Host
// and hostvm.VM) for the unit tests of features: VMs whose configuration
// and runtime live in a real directory, a lock per VM, operations run by a
// real operation.Manager, and a record of what the feature asked for
// (starts, turn-offs, events, hooks).
package hostvmtest

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/hvproject/hv/api"
	"github.com/hvproject/hv/internal/disk"
	"github.com/hvproject/hv/internal/errdefs"
	"github.com/hvproject/hv/internal/guest"
	"github.com/hvproject/hv/internal/hostvm"
	"github.com/hvproject/hv/internal/operation"
	"github.com/hvproject/hv/internal/vmconfig"
)

// VM is a fake hostvm.VM. Its configuration is saved in Dir (so features
// that read config.json find it); Sess is what Session returns (nil: no
// QEMU; once its Gone is closed, none either, as the host clears it).
// Freeze succeeds unless FreezeE is set or NoFreeze says why the guest
// cannot; the fake tracks whether the guest is frozen. Fields are set
// before the test hands the VM over.
type VM struct {
	Directory string
	RunDir    string
	Sess      hostvm.Session
	G         *guest.Guest
	Frozen    api.FreezeStatus // what Freeze returns
	FreezeE   error            // what Freeze fails with
	NoFreeze  string           // what CannotFreeze says
	Up        time.Duration    // what Uptime says
	UpdateErr error            // what UpdateConfig returns, changing nothing

	mu       sync.Mutex
	cfg      vmconfig.Config
	rt       vmconfig.Runtime
	lock     chan struct{}
	events   []string
	frozen   bool
	freezes  int
	thaws    int
	setState []string
}

// NewVM saves cfg into dir and returns the VM, in state.
func NewVM(dir string, cfg vmconfig.Config, state string) (*VM, error) {
	if err := vmconfig.Save(dir, cfg); err != nil {
		return nil, err
	}
	return &VM{Directory: dir, RunDir: filepath.Join(dir, "run"), cfg: cfg, rt: vmconfig.Runtime{State: state}, lock: make(chan struct{}, 1)}, nil
}

var _ hostvm.VM = (*VM)(nil)

func (v *VM) Name() string               { return v.Config().Name }
func (v *VM) ID() string                 { return v.Config().ID }
func (v *VM) Dir() string                { return v.Directory }
func (v *VM) Path(file string) string    { return filepath.Join(v.Directory, file) }
func (v *VM) RunPath(file string) string { return filepath.Join(v.RunDir, file) }
func (v *VM) Guest() *guest.Guest        { return v.G }
func (v *VM) CannotFreeze() string       { return v.NoFreeze }
func (v *VM) Uptime() time.Duration      { return v.Up }

func (v *VM) Session() (hostvm.Session, bool) {
	if v.Sess == nil {
		return nil, false
	}
	select {
	case <-v.Sess.Gone():
		return nil, false
	default:
		return v.Sess, true
	}
}

func (v *VM) Freeze(ctx context.Context, timeout int) (api.FreezeStatus, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.freezes++
	if v.FreezeE != nil {
		return v.Frozen, v.FreezeE
	}
	v.frozen = true
	return v.Frozen, nil
}

func (v *VM) Thaw() api.FreezeStatus {
	v.mu.Lock()
	defer v.mu.Unlock()
	if !v.frozen {
		return api.FreezeStatus{}
	}
	v.frozen = false
	v.thaws++
	return api.FreezeStatus{FrozenSeconds: 0.25}
}

// IsFrozen says whether the guest is frozen now; Freezes and Thaws count
// the freezes asked for and those ended.
func (v *VM) IsFrozen() bool { v.mu.Lock(); defer v.mu.Unlock(); return v.frozen }
func (v *VM) Freezes() int   { v.mu.Lock(); defer v.mu.Unlock(); return v.freezes }
func (v *VM) Thaws() int     { v.mu.Lock(); defer v.mu.Unlock(); return v.thaws }

// Config returns a deep copy, as the host does.
func (v *VM) Config() vmconfig.Config {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cfg.Clone()
}

func (v *VM) Runtime() vmconfig.Runtime {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.rt
}

func (v *VM) State() string { return v.Runtime().State }

// UpdateConfig saves what fn leaves, as the host does.
func (v *VM) UpdateConfig(fn func(*vmconfig.Config) error) (vmconfig.Config, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.UpdateErr != nil {
		return v.cfg, v.UpdateErr
	}
	c := v.cfg.Clone()
	if err := fn(&c); err != nil {
		return v.cfg.Clone(), err
	}
	if err := vmconfig.Save(v.Directory, c); err != nil {
		return v.cfg.Clone(), err
	}
	v.cfg = c
	return c, nil
}

func (v *VM) UpdateRuntime(fn func(*vmconfig.Runtime)) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	fn(&v.rt)
	return nil
}

func (v *VM) SetState(state, reason string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.rt.State, v.rt.Reason = state, reason
	v.setState = append(v.setState, state)
	return nil
}

// RecordFact edits the runtime record while ss is the VM's Sess.
func (v *VM) RecordFact(ss hostvm.Session, fn func(rt *vmconfig.Runtime) bool) (bool, error) {
	cur, ok := v.Session()
	v.mu.Lock()
	defer v.mu.Unlock()
	if !ok || cur != ss {
		return false, nil
	}
	rt := v.rt
	if !fn(&rt) {
		return false, nil
	}
	v.rt = rt
	return true, nil
}

// States lists the states SetState recorded, in order.
func (v *VM) States() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.setState...)
}

// Publish records the event; Events returns them as "action: msg".
func (v *VM) Publish(action, msg string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.events = append(v.events, action+": "+msg)
}

func (v *VM) Events() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.events...)
}

// Host is a fake hostvm.Host over a fixed set of VMs. StartFn and TurnOffFn,
// when set, stand for starting and turning off a VM (the default records
// the state only; TurnOff of a VM with a fake Session kills it). OnHook,
// when set, runs at every hook point: a test that panics there stands for
// hvd crashing at that point.
type Host struct {
	Ops       *operation.Manager
	Tool      *disk.Tool
	Logger    *slog.Logger
	StartFn   func(ctx context.Context, v hostvm.VM) error
	TurnOffFn func(v hostvm.VM, reason string) error
	OnHook    func(point string)
	// ActionFn, when set, is CheckAction (the default allows every action).
	ActionFn func(v hostvm.VM, action string) error
	// StoreDir is where Reserve prepares VMs and Adopt puts them (see
	// register.go); AdoptErr, when set, is what Adopt returns.
	StoreDir string
	AdoptErr error

	mu       sync.Mutex
	vms      map[string]*VM
	hooks    []string
	reserved map[string]string // name → ID of VMs being made
	changed  int               // calls of ImagesChanged
}

// NewHost returns a host with vms, a real operation manager and a logger
// that discards.
func NewHost(vms ...*VM) *Host {
	h := &Host{Ops: operation.NewManager(nil, func(error) int { return 500 }), Logger: slog.New(slog.DiscardHandler), vms: map[string]*VM{}}
	for _, v := range vms {
		h.vms[v.Name()] = v
	}
	return h
}

var _ hostvm.Host = (*Host)(nil)

func (h *Host) VM(name string) (hostvm.VM, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if v := h.vms[name]; v != nil {
		return v, nil
	}
	return nil, fmt.Errorf("VM %q: %w", name, errdefs.ErrNotFound)
}

func (h *Host) VMs() []hostvm.VM {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := []hostvm.VM{}
	for _, v := range h.vms {
		out = append(out, v)
	}
	return out
}

// Locked takes the VM's lock (busy: a conflict, as the host says) and runs
// work as an operation holding it.
func (h *Host) Locked(hv hostvm.VM, kind, action string, work hostvm.Work) (*operation.Op, error) {
	v := hv.(*VM)
	select {
	case v.lock <- struct{}{}:
	default:
		return nil, fmt.Errorf("VM %s is busy: %w", v.Name(), errdefs.ErrConflict)
	}
	return h.Ops.Start(kind, nil, func(ctx context.Context, op *operation.Op) (any, error) {
		defer func() { <-v.lock }()
		return work(ctx, op, v)
	}), nil
}

// TryLock takes the VM's lock at once (busy: a conflict).
func (h *Host) TryLock(hv hostvm.VM, kind string, cancel context.CancelFunc) (func(), error) {
	v := hv.(*VM)
	select {
	case v.lock <- struct{}{}:
		return func() { <-v.lock }, nil
	default:
		return nil, fmt.Errorf("VM %s is busy: %w", v.Name(), errdefs.ErrConflict)
	}
}

// Describe is the VM's name, ID and state.
func (h *Host) Describe(hv hostvm.VM) api.VM {
	return api.VM{Name: hv.Name(), ID: hv.ID(), State: hv.State()}
}

func (h *Host) WithLock(ctx context.Context, hv hostvm.VM, kind string, fn func() error) error {
	v := hv.(*VM)
	select {
	case v.lock <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-v.lock }()
	return fn()
}

func (h *Host) Operations() *operation.Manager { return h.Ops }
func (h *Host) Disk() *disk.Tool               { return h.Tool }
func (h *Host) Log() *slog.Logger              { return h.Logger }

// Hook records the point; Hooks returns them in order.
func (h *Host) Hook(point string) {
	h.mu.Lock()
	h.hooks = append(h.hooks, point)
	h.mu.Unlock()
	if h.OnHook != nil {
		h.OnHook(point)
	}
}

func (h *Host) Hooks() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.hooks...)
}

func (h *Host) Start(ctx context.Context, op *operation.Op, hv hostvm.VM) error {
	if h.StartFn != nil {
		if err := h.StartFn(ctx, hv); err != nil {
			return err
		}
	}
	return hv.SetState(api.StateRunning, "")
}

func (h *Host) TurnOff(hv hostvm.VM, reason string) error {
	if h.TurnOffFn != nil {
		if err := h.TurnOffFn(hv, reason); err != nil {
			return err
		}
	} else if ss, ok := hv.Session(); ok {
		if err := ss.Kill(); err != nil {
			return err
		}
	}
	return hv.SetState(api.StateOff, reason)
}
